"""Who is asking: the authenticated principal of a request, and the 401 raised when that cannot be known."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.rest.errors import LoopBackError

Via = Literal["bearer", "cookie", "query", "ticket"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user: `id` is the token's `sub`, `roles` come from the configured claim.

    `expires_at` is the Unix time the credentials stop being valid (the token's `exp`, which a stream ticket
    carries over), so a stream opened with them can be ended then.
    """

    id: str
    roles: frozenset[str]
    expires_at: float
    via: Via = "bearer"


def invalid_token(message: str) -> LoopBackError:
    """Credentials were presented but are not acceptable; never falls back to anonymous."""
    return LoopBackError(
        401, message, code="INVALID_TOKEN", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def authorization_required() -> LoopBackError:
    """LoopBack's answer to an anonymous request that the ACLs do not allow."""
    return LoopBackError(
        401, "Authorization Required", code="AUTHORIZATION_REQUIRED", headers={"WWW-Authenticate": "Bearer"}
    )


def access_denied() -> LoopBackError:
    """An authenticated principal that the ACLs do not allow."""
    return LoopBackError(403, "Access Denied", code="ACCESS_DENIED")
