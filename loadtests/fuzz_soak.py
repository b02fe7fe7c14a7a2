"""A long schemathesis soak: the suite's run (tests/rest/test_fuzz.py) with a random seed and many examples.

    python -m loadtests.fuzz_soak --examples 300                      # SQLite + memory, auth off and on
    python -m loadtests.fuzz_soak --examples 300 --rounds 3 \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1/soak --redis-url redis://127.0.0.1:6379/0

Each round picks a new seed and prints it, so a failure can be replayed with the suite's
`GATEWAY_FUZZ_SEED=<seed> GATEWAY_FUZZ_EXAMPLES=<n>`. The exit status is non-zero if any round failed.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.conftest import EXAMPLE_MODELS
from tests.fuzzing import fuzz_env, st_command, st_env
from tests.server import GatewayProcess


def soak_round(args: argparse.Namespace, seed: int, auth: bool, directory: Path) -> bool:
    env = fuzz_env(
        directory,
        EXAMPLE_MODELS,
        database_url=args.database_url,
        redis_url=args.redis_url,
        redis_prefix=f"soak{uuid.uuid4().hex[:8]}",
        auth=auth,
    )
    report = directory / f"junit-{seed}-{auth}.xml"
    started = time.monotonic()
    with GatewayProcess(env, log_path=directory / "gateway.log") as gateway:
        command = st_command(gateway.url, seed=seed, examples=args.examples, report=report, auth=auth)
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, cwd=directory, env=st_env()
        )
    lines = result.stdout.splitlines()
    generated = [line.strip() for line in lines if " generated" in line]
    failures = [line.strip() for line in lines if line.strip().startswith("\u274c ST")]
    log = (directory / "gateway.log").read_text(errors="replace")
    server_errors = len(re.findall(r" status=5\d\d ", log))  # the gateway's own request log
    print(
        f"seed {seed} auth {'on' if auth else 'off'}: exit {result.returncode} in "
        f"{time.monotonic() - started:.0f} s; {generated[-1] if generated else 'no summary'}; "
        f"5xx in the gateway's log: {server_errors}"
    )
    for line in failures:
        print("   ", line)
    if result.returncode:
        print(result.stdout[-10_000:])
    return result.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=300, help="examples per operation")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--redis-url", default=None, help="default: the memory broker")
    args = parser.parse_args()
    ok = True
    for _ in range(args.rounds):
        seed = random.randrange(2**31)
        for auth in (False, True):
            with tempfile.TemporaryDirectory() as directory:
                ok &= soak_round(args, seed, auth, Path(directory))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
