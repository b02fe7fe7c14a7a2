"""The request-level glue: who is asking (authentication), what they may do (ACLs, scopes), and limits.

`Security.access(request, model, method)` is called first by every model route, before the request's filter
or body is even parsed, so an unauthorised client learns nothing (not even property names from a filter
error). It returns the `Access` the handler then applies: a row scope for reads and writes, the owner value
written rows must carry. With authentication off (`make run`), it only counts limits and returns `OPEN`.

Credentials, in order: `Authorization: Bearer <jwt>`; on a change stream, `?ticket=`; on GET/HEAD only, the
session cookie (so a cookie can never authorise a cross-site write); and `?access_token=` only when
`GATEWAY_AUTH_ALLOW_QUERY_TOKEN` is on. Credentials that are present but wrong are a 401, never anonymous.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from starlette.requests import Request

from gateway.broker.base import Broker
from gateway.config import Settings
from gateway.models.definition import ModelDef, Registry
from gateway.security.acl import METHODS, Decision, Grant, Subject, decide, uses_owner
from gateway.security.limits import Limits, Release, limit_key, store_unavailable
from gateway.security.principal import (
    Principal,
    access_denied,
    authorization_required,
    invalid_token,
)
from gateway.security.scope import OPEN, Access, check_owner_property, owner_value, scope_for
from gateway.security.store import SecurityStore, StoreError, store_for
from gateway.security.tickets import Tickets
from gateway.security.tokens import TokenVerifier

log = logging.getLogger("gateway.security")
SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class StreamAccess:
    """A change stream's access, and how to give back its stream slot when it ends."""

    access: Access
    release: Release | None


class Security:
    """Authentication, authorisation and limits of one gateway process."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        store: SecurityStore,
        verifier: TokenVerifier | None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.verifier = verifier
        self.store = store
        self.tickets = Tickets(store, settings.auth_ticket_ttl)
        self.limits = Limits(
            store,
            writes_per_second=settings.limit_writes_per_second,
            streams_per_principal=settings.limit_streams_per_principal,
            tickets_per_minute=settings.limit_tickets_per_minute,
        )
        self._decide = functools.lru_cache(maxsize=4096)(self._decide_uncached)

    @property
    def enabled(self) -> bool:
        return self.verifier is not None

    def start(self) -> None:
        if self.verifier is None:
            log.warning(
                "AUTHENTICATION IS OFF: every client may read and write every model and stream, and the "
                "model ACLs are not enforced. Set GATEWAY_AUTH_JWT_SECRET or GATEWAY_AUTH_JWT_PUBLIC_KEY "
                "to turn it on (docs/security.md)."
            )
        else:
            log.info("authentication is on (%s bearer tokens)", self.verifier.algorithm)

    async def aclose(self) -> None:
        await self.limits.aclose()
        await self.store.aclose()

    # -- authentication --

    async def authenticate(self, request: Request, model: ModelDef | None = None) -> Principal | None:
        """The request's principal, None when it carries no credentials (or auth is off); 401 when it
        carries credentials that are not valid. `model` is set only on its change stream (tickets)."""
        verifier = self.verifier
        if verifier is None:
            return None
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise invalid_token("The Authorization header must be `Bearer <token>`")
            return verifier.verify(token.strip(), "bearer")
        if model is not None:
            ticket = request.query_params.get("ticket")
            if ticket is not None:
                try:
                    return await self.tickets.redeem(ticket, model)
                except StoreError:
                    raise store_unavailable() from None
        if request.method in SAFE_METHODS:
            cookie = request.cookies.get(self.settings.auth_cookie_name)
            if cookie:
                return verifier.verify(cookie, "cookie")
        if self.settings.auth_allow_query_token:
            query_token = request.query_params.get("access_token")
            if query_token:
                return verifier.verify(query_token, "query")
        return None

    # -- authorisation --

    def decision(self, model: ModelDef, method: str, principal: Principal | None) -> Decision:
        subject = Subject(None) if principal is None else Subject(principal.id, principal.roles)
        return self._decide(model.name, method, subject)

    def _decide_uncached(self, model_name: str, method: str, subject: Subject) -> Decision:
        return decide(self.registry.by_name[model_name].acls, METHODS[method], subject)

    async def access(self, request: Request, model: ModelDef, method: str) -> Access:
        """Authenticate and authorise `method` on `model` (401/403/429 raised), or OPEN with auth off."""
        stream = method == "createChangeStream"
        principal = await self.authenticate(request, model if stream else None)
        rate_key = limit_key(
            principal.id if principal else None, request.client.host if request.client else None
        )
        if METHODS[method].access_type == "WRITE":  # counted before the ACLs: refused writes cost too
            await self.limits.count_write(rate_key)
        return OPEN if self.verifier is None else self._authorise(model, method, principal, rate_key)

    async def stream_access(self, request: Request, model: ModelDef) -> StreamAccess:
        access = await self.access(request, model, "createChangeStream")
        release = await self.limits.open_stream(access.rate_key)
        return StreamAccess(access, release)

    def _authorise(self, model: ModelDef, method: str, principal: Principal | None, rate_key: str) -> Access:
        decision = self.decision(model, method, principal)
        if decision.grant is Grant.NONE:
            raise authorization_required() if principal is None else access_denied()
        scope = scope_for(decision.grant, model, principal)
        owner = None
        remote = METHODS[method]
        forced = decision.grant is Grant.OWN or (method == "create" and not decision.privileged)
        if principal is not None and remote.access_type == "WRITE" and forced and uses_owner(model.acls):
            value = owner_value(model, principal)
            if value is None:
                raise access_denied()  # this principal's id cannot be an owner of this model's rows
            owner = (model.owner_property, value)
        return Access(principal, scope, owner, rate_key)


def build_security(settings: Settings, registry: Registry, broker: Broker) -> Security:
    """Security for `settings`; raises ValueError naming the setting or model that is wrong."""
    verifier: TokenVerifier | None = None
    options = {
        "issuer": settings.auth_jwt_issuer,
        "audience": settings.auth_jwt_audience,
        "leeway": settings.auth_jwt_leeway,
        "roles_claim": settings.auth_roles_claim,
    }
    if settings.auth_jwt_secret is not None:
        verifier = TokenVerifier.from_secret(settings.auth_jwt_secret.get_secret_value(), **options)
    elif settings.auth_jwt_public_key is not None:
        verifier = TokenVerifier.from_public_key(settings.auth_jwt_public_key, **options)
    if verifier is not None:
        for model in registry.models:
            check_owner_property(model)
    return Security(settings, registry, store_for(broker, settings.redis_prefix), verifier)
