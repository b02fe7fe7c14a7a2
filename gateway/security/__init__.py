"""Security: bearer JWTs, stream tickets and cookies, LoopBack ACLs with `$owner` row scopes, and limits.

Off unless a JWT key is configured (docs/security.md). Modules, one concept each:
`tokens` (JWT → Principal), `tickets` (single-use stream tickets), `acl` (LoopBack's resolution, pure),
`scope` (`$owner` as a where clause; the `Access` a handler applies), `limits` and `store` (cluster-wide
counters in Redis, or in memory), `middleware` (security headers, body size), `guard` (the per-request glue),
`routes` (`/auth`), `setup` (wiring into the app).
"""

from gateway.security.guard import Security, StreamAccess, build_security
from gateway.security.scope import OPEN, Access

__all__ = ["OPEN", "Access", "Security", "StreamAccess", "build_security"]
