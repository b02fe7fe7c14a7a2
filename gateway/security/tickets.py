"""Stream tickets: how a browser's `EventSource`, which cannot send headers, opens an authenticated stream.

The page asks `POST /auth/stream-ticket` with its bearer token and gets a random ticket, valid for
`GATEWAY_AUTH_TICKET_TTL` seconds (60 by default) and bound to the principal and one model; it then opens
`/api/<Plural>/change-stream?ticket=...`. Any worker redeems it, exactly once (GETDEL). The store keeps only a
hash of the ticket, so a leaked Redis dump or MONITOR session holds nothing usable, and the ticket itself is
never logged (the request log redacts `ticket`). The stream then lives until the token behind the ticket
expires, not the ticket.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

import orjson

from gateway.models.definition import ModelDef
from gateway.security.principal import Principal, invalid_token
from gateway.security.store import SecurityStore

_TICKET_BYTES = 32
_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")


def ticket_key(ticket: str) -> str:
    return "ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


class Tickets:
    def __init__(self, store: SecurityStore, ttl: float) -> None:
        self._store = store
        self.ttl = ttl

    async def issue(self, principal: Principal, model: ModelDef) -> tuple[str, int]:
        """A fresh ticket for `principal` on `model`'s change stream, and how many seconds it is valid."""
        ttl = min(self.ttl, principal.expires_at - time.time())
        if ttl < 1:
            raise invalid_token("The access token expires too soon to issue a stream ticket")
        ticket = secrets.token_urlsafe(_TICKET_BYTES)
        record = {
            "sub": principal.id,
            "roles": sorted(principal.roles),
            "exp": principal.expires_at,
            "model": model.name,
        }
        await self._store.put(ticket_key(ticket), orjson.dumps(record), ttl)
        return ticket, int(ttl)

    async def redeem(self, ticket: str, model: ModelDef) -> Principal:
        """The principal a ticket was issued to; the ticket is gone afterwards, whatever the outcome."""
        if not _SHAPE.fullmatch(ticket):
            raise invalid_token("The stream ticket is malformed")
        raw = await self._store.take(ticket_key(ticket))
        if raw is None:
            raise invalid_token("The stream ticket is unknown, expired or already used")
        record = orjson.loads(raw)
        if record.get("model") != model.name:
            raise invalid_token(f"The stream ticket was issued for another model than {model.name}")
        expires_at = float(record["exp"])
        if expires_at <= time.time():
            raise invalid_token("The access token behind the stream ticket has expired")
        return Principal(str(record["sub"]), frozenset(record["roles"]), expires_at, via="ticket")
