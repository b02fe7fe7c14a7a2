"""`python -m gateway.ops.probe [/healthz]`: a container health check with nothing but the standard library.

The slim image has no curl or wget, and a probe must not import the application (seconds of imports every
few seconds). It asks the local gunicorn, on the port it was told to bind (`GATEWAY_BIND`, else `PORT`, else
3000, as deploy/gunicorn.conf.py decides), and exits 0 on a 200, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORT = 3000
TIMEOUT = 2.0


def local_url(path: str, environ: dict[str, str] | None = None) -> str:
    """The URL of `path` on this container's own server."""
    environ = dict(os.environ) if environ is None else environ
    port = environ.get("PORT", "").strip() or str(DEFAULT_PORT)
    bind = environ.get("GATEWAY_BIND", "").split(",")[0].strip()
    if bind and not bind.startswith("unix:"):
        port = bind.rsplit(":", 1)[-1]
    return f"http://127.0.0.1:{port}{path}"


def main(argv: list[str]) -> int:
    url = local_url(argv[1] if len(argv) > 1 else "/healthz")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"probe {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
