"""LoopBack's `include`: related rows attached to the rows of a read, one query per relation and level.

`parse_include` accepts every filter form LB3 does (`"rel"`, `["a", "b"]`, `{"a": "b"}`, `{"a": ["b"]}`,
`{"relation": "a", "scope": {where, fields, order, limit, skip, include}}`, nested) and validates each
scope against the related model. `attach` then reads each relation with one `IN` query over the keys of
all the rows at that level (never one per row) and hangs the results on the rows under the relation's
name, after their properties, as LB3's `toJSON` does. A scope's `limit`/`skip` apply per parent row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.filters import Condition, Filter, FilterError, Op, Where, parse_filter
from gateway.filters.ast import And
from gateway.models.definition import ModelDef, RelationDef, RelationKind
from gateway.models.validation import parse_id

Row = dict[str, Any]
FindRows = Callable[[ModelDef, Filter], Awaitable[list[Row]]]
"""Reads rows of a model, with its ACLs and `$owner` scope applied: the router's `find` for that model."""


@dataclass(frozen=True, slots=True)
class Inclusion:
    """One relation to include, with the scope its related rows are read with."""

    relation: RelationDef
    target: ModelDef
    scope: Filter
    nested: tuple[Inclusion, ...] = ()


def parse_include(model: ModelDef, raw: Any, models: Mapping[str, ModelDef]) -> tuple[Inclusion, ...]:
    """The inclusions of a filter's `include`; an unknown relation or a bad scope is a `FilterError`."""
    if raw is None or raw == "" or raw == [] or raw == {}:
        return ()
    if isinstance(raw, str):
        return (_inclusion(model, raw, None, None, models),)
    if isinstance(raw, list):
        return tuple(inclusion for item in raw for inclusion in parse_include(model, item, models))
    if isinstance(raw, Mapping):
        if "relation" in raw:
            scope = raw.get("scope")
            if scope is not None and not isinstance(scope, Mapping):
                raise FilterError(f"The scope of relation {raw['relation']!r} must be an object")
            return (_inclusion(model, raw["relation"], scope, None, models),)
        return tuple(_inclusion(model, name, None, nested, models) for name, nested in raw.items())
    raise FilterError(f"The include {raw!r} is not valid")


def without_include(raw: Any) -> tuple[Any, Any]:
    """(the filter without `include`, its `include`) for a raw filter of any shape."""
    if not isinstance(raw, Mapping) or "include" not in raw:
        return raw, None
    return {k: v for k, v in raw.items() if k != "include"}, raw["include"]


def _inclusion(
    model: ModelDef, name: Any, scope: Mapping[str, Any] | None, nested: Any, models: Mapping[str, ModelDef]
) -> Inclusion:
    relation = model.relation.get(name) if isinstance(name, str) else None
    if relation is None:
        raise FilterError(f'Relation "{name}" is not defined for {model.name} model')
    if relation.kind.embeds:  # the value is in the row already: nothing to read, no scope to apply
        return Inclusion(relation, model, Filter())
    target = models[relation.target]
    flt, scope_include = without_include(scope or {})
    return Inclusion(
        relation,
        target,
        parse_filter(target, flt),
        parse_include(target, scope_include if scope_include is not None else nested, models),
    )


async def attach(
    rows: list[Row], inclusions: Iterable[Inclusion], find: FindRows, models: Mapping[str, ModelDef]
) -> None:
    """Read and attach every inclusion to `rows` (in place), level by level."""
    for inclusion in inclusions:
        await _attach_one(rows, inclusion, find, models)


async def _attach_one(
    rows: list[Row], inclusion: Inclusion, find: FindRows, models: Mapping[str, ModelDef]
) -> None:
    relation, target, scope = inclusion.relation, inclusion.target, inclusion.scope
    if relation.kind.embeds:  # LB3 repeats the embedded value under the relation's name
        for row in rows:
            value = row.get(relation.key_from)
            if relation.kind is RelationKind.EMBEDS_MANY:
                row[relation.name] = value or []
            elif value is not None:
                row[relation.name] = value
        return
    keys_of_row = [_keys(row, relation) for row in rows]
    if relation.kind is RelationKind.HAS_MANY_THROUGH:
        assert relation.through is not None
        assert relation.key_through is not None
        links = await _read(find, models[relation.through], relation.key_to, _union(keys_of_row), Filter())
        targets_of: dict[Any, list[Any]] = {}
        for link in links:
            targets_of.setdefault(link.get(relation.key_to), []).append(link.get(relation.key_through))
        keys_of_row = [[t for key in keys for t in targets_of.get(key, ())] for keys in keys_of_row]
        match_key = target.id_name
    else:
        match_key = relation.key_to
    related = await _read(find, target, match_key, _union(keys_of_row), scope)
    if inclusion.nested:
        await attach(related, inclusion.nested, find, models)
    by_key: dict[Any, list[Row]] = {}
    for row in related:
        by_key.setdefault(row.get(match_key), []).append(row)
    keep = None if scope.fields is None else {*scope.fields, *(n.relation.name for n in inclusion.nested)}
    for row, keys in zip(rows, keys_of_row, strict=True):
        if relation.kind is RelationKind.HAS_MANY_THROUGH:  # LB3 keeps the target query's order here
            wanted = set(keys)
            found = [_project(r, keep) for r in related if r.get(match_key) in wanted]
        else:  # and the key list's order for referencesMany
            found = [_project(r, keep) for key in keys for r in by_key.get(key, ())]
        if relation.kind.to_many:
            start = scope.skip or 0
            row[relation.name] = found[start : start + scope.limit] if scope.limit else found[start:]
        elif found:
            row[relation.name] = found[0]


def _keys(row: Row, relation: RelationDef) -> list[Any]:
    value = row.get(relation.key_from)
    if relation.kind is RelationKind.REFERENCES_MANY:
        return [v for v in value if v is not None] if isinstance(value, list) else []
    return [] if value is None else [value]


def _union(keys_of_row: list[list[Any]]) -> list[Any]:
    return list(dict.fromkeys(key for keys in keys_of_row for key in keys))


async def _read(find: FindRows, model: ModelDef, key: str, values: list[Any], scope: Filter) -> list[Row]:
    """One query: the rows of `model` whose `key` is among `values`, within the scope's where and order
    (limit and skip are applied per parent by the caller, so they are left out here)."""
    if not values:
        return []
    prop = model.by_name[key]
    stored = tuple(v for v in (parse_id(model, v) if prop.is_id else v for v in values) if v is not None)
    if not stored:
        return []
    condition: Where = Condition(key, Op.INQ, stored)
    where = condition if scope.where is None else And((condition, scope.where))
    return await find(model, Filter(where, scope.order, None, 0, None))


def _project(row: Row, keep: set[str] | None) -> Row:
    return row if keep is None else {k: v for k, v in row.items() if k in keep}
