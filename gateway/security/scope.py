"""Row scopes: what `$owner` means for the rows a request reads or writes, as a where clause.

A grant that holds only for the principal's own rows becomes the condition `<owner property> = <principal>`;
it is ANDed into every read's where clause, every write's row lookup and every streamed event's predicate, so
the same filter code (SQL and Python) enforces it everywhere. Rows outside the scope behave as if they did
not exist (404 on findById, `{"count": 0}` on deleteById), which also keeps their existence private.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.filters import And, Condition, Filter, Op, Or, Where
from gateway.models.definition import ModelDef, PropertyType
from gateway.security.acl import Grant, uses_owner
from gateway.security.principal import Principal

NOTHING: Where = Or(())
"""Matches no row (a principal whose id cannot be an owner value owns nothing)."""
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


class OwnerSetupError(ValueError):
    """A model's ACLs use `$owner` but its owner property cannot hold a principal id."""


def check_owner_property(model: ModelDef) -> None:
    """Fail at start, naming the model, when `$owner` rules cannot be enforced."""
    if not uses_owner(model.acls):
        return
    prop = model.by_name.get(model.owner_property)
    if prop is None:
        raise OwnerSetupError(
            f"model {model.name}: its acls use $owner, so it must declare the owner property "
            f"{model.owner_property!r} (or name another with options.ownerProperty)"
        )
    if prop.type not in (PropertyType.STRING, PropertyType.NUMBER) or prop.is_id:
        raise OwnerSetupError(
            f"model {model.name}: owner property {prop.name!r} must be a string or number, not the id"
        )
    if prop.hidden:
        # Change objects never carry hidden properties, so no streamed event could be matched to its owner.
        raise OwnerSetupError(f"model {model.name}: owner property {prop.name!r} must not be hidden")


def owner_value(model: ModelDef, principal: Principal) -> Any | None:
    """The principal's id as a value of the model's owner property, or None if it cannot be one."""
    prop = model.by_name.get(model.owner_property)
    if prop is None:
        return None
    if prop.type is PropertyType.NUMBER:
        if not _NUMBER.fullmatch(principal.id):
            return None
        value = float(principal.id)
        return value if math.isfinite(value) else None
    return principal.id


def both(first: Where | None, second: Where | None) -> Where | None:
    if first is None:
        return second
    if second is None:
        return first
    return And((first, second))


@dataclass(frozen=True, slots=True)
class Access:
    """What one request may do: who it is, which rows it may touch, and what its writes must say.

    `scope` None means every row. `owner` is the (property, value) that written rows must carry, when the
    principal may only create or keep rows of its own.
    """

    principal: Principal | None = None
    scope: Where | None = None
    owner: tuple[str, Any] | None = None
    rate_key: str = field(default="", compare=False)

    @property
    def expires_at(self) -> float | None:
        return None if self.principal is None else self.principal.expires_at

    def where(self, where: Where | None) -> Where | None:
        """`where` limited to the rows this request may see."""
        return both(where, self.scope)

    def filter(self, flt: Filter) -> Filter:
        if self.scope is None:
            return flt
        return Filter(self.where(flt.where), flt.order, flt.limit, flt.skip, flt.fields)

    def row(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A write body with the owner property forced to the principal, when it must be."""
        if self.owner is None:
            return dict(body)
        name, value = self.owner
        return {**body, name: value}

    def patch(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """A patch body: the owner property forced only if the patch sets it (a row cannot be given away)."""
        if self.owner is None or self.owner[0] not in body:
            return body
        return self.row(body)


OPEN = Access()
"""Authentication off: everyone may do everything."""


def scope_for(grant: Grant, model: ModelDef, principal: Principal | None) -> Where | None:
    """The rows a grant covers, as a where clause (None: all)."""
    if grant is Grant.ALL:
        return None
    value = None if principal is None else owner_value(model, principal)
    if value is None:
        return NOTHING if grant is Grant.OWN else None
    condition = Condition(model.owner_property, Op.EQ, value)
    if grant is Grant.OWN:
        return condition
    # OTHERS: rows owned by someone else, or by nobody.
    return Or((Condition(model.owner_property, Op.NEQ, value), Condition(model.owner_property, Op.EQ, None)))
