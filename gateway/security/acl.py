"""LoopBack 3's ACL resolution for the model JSON `acls`, as pure functions.

Faithful to `loopback/common/models/acl.js` (`getMatchingScore`, `resolvePermission`) and
`lib/access-context.js`:

- Each rule that applies to the principal gets a score built from, in order of weight: model, property
  (exact method name 3, `*` 2), access type (exact 3, `*` 2; an `EXECUTE` rule matches every access type,
  a `WRITE` rule matches `REPLICATE`), principal type (USER 4 > APP 3 > ROLE 2), role (a named role 5 >
  `$owner` 4 > `$related` 3 > `$authenticated`/`$unauthenticated` 2 > `$everyone` 1), and last the permission
  (DENY 3 > AUDIT 2 > ALARM 1 > ALLOW 0). So the most specific rule wins, and at equal specificity DENY wins.
- A REST call names one model, one method and one access type (never a wildcard), so the highest-scored
  matching rule decides; rules of equal score keep their order in the JSON.
- No matching rule: DEFAULT, which LoopBack settles as ALLOW (the model's `defaultPermission`, which the
  gateway does not read, would otherwise apply). A model with a `DENY $everyone *` rule therefore denies
  whatever no more specific rule allows.

Differences, each documented in docs/security.md: a rule's `property` may also name a method's alias
(`upsert`, `updateAttributes`, ...), which LoopBack honoured only for ACLs stored in its database; `$owner` is
also decided for methods without an id (find, count, create, ...) by scoping rows to the owner instead of
never matching; `$related` never matches; USER rules match the token's `sub`; APP rules never match.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.models.definition import AclEntry

ALL = "*"
EVERYONE = "$everyone"
AUTHENTICATED = "$authenticated"
UNAUTHENTICATED = "$unauthenticated"
OWNER = "$owner"
RELATED = "$related"

_PERMISSION_ORDER = {"DEFAULT": 0, "ALLOW": 1, "ALARM": 2, "AUDIT": 3, "DENY": 4}
_PRINCIPAL_TYPE_WEIGHT = {"USER": 4, "APP": 3, "APPLICATION": 3, "ROLE": 2}
_ROLE_WEIGHT = {OWNER: 4, RELATED: 3, AUTHENTICATED: 2, UNAUTHENTICATED: 2, EVERYONE: 1}


@dataclass(frozen=True, slots=True)
class RemoteMethod:
    """A LoopBack remote method the gateway serves: its name, aliases and access type."""

    name: str
    access_type: str
    aliases: tuple[str, ...] = ()
    has_id: bool = False  # acts on one row named in the URL

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


METHODS = {
    m.name: m
    for m in (
        RemoteMethod("create", "WRITE"),
        RemoteMethod("patchOrCreate", "WRITE", ("upsert", "updateOrCreate")),
        RemoteMethod("replaceOrCreate", "WRITE"),
        RemoteMethod("upsertWithWhere", "WRITE", ("patchOrCreateWithWhere",)),
        RemoteMethod("exists", "READ", has_id=True),
        RemoteMethod("findById", "READ", has_id=True),
        RemoteMethod("replaceById", "WRITE", has_id=True),
        RemoteMethod("find", "READ"),
        RemoteMethod("findOne", "READ"),
        RemoteMethod("updateAll", "WRITE", ("update",)),
        RemoteMethod("deleteById", "WRITE", ("destroyById", "removeById"), has_id=True),
        RemoteMethod("count", "READ"),
        RemoteMethod("patchAttributes", "WRITE", ("updateAttributes",), has_id=True),
        RemoteMethod("createChangeStream", "READ"),
    )
}
"""PersistedModel's remote methods with LoopBack 3's declared `accessType` and `aliases`."""


@dataclass(frozen=True, slots=True)
class Subject:
    """Who asks, as the ACLs see it: a user id (None when anonymous) and the named roles it holds."""

    user_id: str | None
    roles: frozenset[str] = frozenset()

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None


def applies_to_method(rule: AclEntry, method: RemoteMethod) -> bool:
    """Whether a model-JSON rule names this method at all (`*`, a name or alias, or a list holding one)."""
    prop = rule.property
    if isinstance(prop, tuple):
        return any(name in prop for name in method.names)
    return prop in (ALL, "") or prop in method.names


def matching_score(rule: AclEntry, method: RemoteMethod) -> int:
    """LoopBack's `ACL.getMatchingScore` for a rule of this model; -1 when it does not apply."""
    score = 3  # the model: a model's own rules always match it exactly
    score *= 4
    prop = rule.property
    if isinstance(prop, tuple) or prop not in (ALL, ""):
        if not applies_to_method(rule, method):
            return -1
        score += 3
    else:
        score += 2
    score *= 4
    wanted, given = method.access_type, rule.access_type or ALL
    if given == wanted or given == "EXECUTE" or (given == "WRITE" and wanted == "REPLICATE"):
        score += 3
    elif given == ALL:
        score += 2
    else:
        return -1
    score = score * 4 + _PRINCIPAL_TYPE_WEIGHT.get(rule.principal_type, 1)
    score *= 8
    if rule.principal_type == "ROLE":
        score += _ROLE_WEIGHT.get(rule.principal_id, 5)
    return score * 4 + _PERMISSION_ORDER.get(rule.permission, 1) - 1


def principal_matches(rule: AclEntry, subject: Subject, *, is_owner: bool) -> bool:
    """Whether the rule's principal is this subject (LoopBack's `isInRole` and exact principal match)."""
    kind, name = rule.principal_type, rule.principal_id
    if kind == "USER":
        return subject.user_id is not None and name == subject.user_id
    if kind != "ROLE":
        return False
    if name == EVERYONE:
        return True
    if name == AUTHENTICATED:
        return subject.authenticated
    if name == UNAUTHENTICATED:
        return not subject.authenticated
    if name == OWNER:
        return is_owner and subject.authenticated
    if name == RELATED:
        return False
    return name in subject.roles


class Verdict(enum.Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"


@dataclass(frozen=True, slots=True)
class Resolution:
    verdict: Verdict
    rule: AclEntry | None  # the deciding rule; None when no rule matched (LoopBack's DEFAULT → ALLOW)


def resolve(
    acls: Iterable[AclEntry], method: RemoteMethod, subject: Subject, *, is_owner: bool = False
) -> Resolution:
    """LoopBack's `resolvePermission` over the rules that apply to this subject."""
    best: tuple[int, AclEntry] | None = None
    for rule in acls:
        if not principal_matches(rule, subject, is_owner=is_owner):
            continue
        score = matching_score(rule, method)
        if score >= 0 and (best is None or score > best[0]):  # strict: equal scores keep JSON order
            best = (score, rule)
    if best is None:
        return Resolution(Verdict.ALLOW, None)
    verdict = Verdict.DENY if best[1].permission == "DENY" else Verdict.ALLOW
    return Resolution(verdict, best[1])


class Grant(enum.Enum):
    """What a subject may do with a method, once ownership is taken into account."""

    ALL = "all"  # every row
    OWN = "own"  # only rows it owns ($owner)
    OTHERS = "others"  # only rows it does not own (a `$owner` DENY under a broader ALLOW)
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Decision:
    grant: Grant
    privileged: bool  # granted by a named role or a USER rule, not only by a dynamic role


def decide(acls: tuple[AclEntry, ...], method: RemoteMethod, subject: Subject) -> Decision:
    """Resolve twice, as the owner of the rows and as a stranger to them, and combine."""
    as_other = resolve(acls, method, subject, is_owner=False)
    if not subject.authenticated or not uses_owner(acls):
        grant = Grant.ALL if as_other.verdict is Verdict.ALLOW else Grant.NONE
        return Decision(grant, _privileged(as_other))
    as_owner = resolve(acls, method, subject, is_owner=True)
    owner_ok, other_ok = as_owner.verdict is Verdict.ALLOW, as_other.verdict is Verdict.ALLOW
    if owner_ok and other_ok:
        grant = Grant.ALL
    elif owner_ok:
        grant = Grant.OWN
    elif other_ok:
        grant = Grant.OTHERS
    else:
        grant = Grant.NONE
    return Decision(grant, _privileged(as_other) and other_ok)


def _privileged(resolution: Resolution) -> bool:
    rule = resolution.rule
    if resolution.verdict is not Verdict.ALLOW or rule is None:
        return False
    return rule.principal_type == "USER" or (
        rule.principal_type == "ROLE" and not rule.principal_id.startswith("$")
    )


def uses_owner(acls: Iterable[AclEntry]) -> bool:
    return any(rule.principal_type == "ROLE" and rule.principal_id == OWNER for rule in acls)
