"""`gateway.client` is usable from any Python program with httpx alone: importing it loads nothing of the
server's stack."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_STACK = ("sqlalchemy", "sqlmodel", "redis", "re2", "yaml", "asyncpg", "aiosqlite", "fastapi")


def test_the_remote_client_loads_none_of_the_servers_dependencies() -> None:
    code = (
        "import json, sys; import gateway.client.remote; "
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout)
    assert "httpx" in loaded
    assert [name for name in SERVER_STACK if name in loaded] == []
