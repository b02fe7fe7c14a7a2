"""What a model's `relations` add to the models, as juggler's relation definitions do when an app boots.

Each relation declares the keys it needs (`defineForeignKey`): a key the file does not declare is appended
after the model's properties, and a declared one is retyped to the target's id type. `embedsOne` and
`embedsMany` declare the property that holds the embedded object(s). `$owner` ACLs without an owner
property resolve to the key of a `belongsTo` relation to a User model, as LB3's `isOwner` follows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import inflection

from gateway.models.definition import (
    EmbeddedType,
    ModelDef,
    PropertyDef,
    PropertyType,
    RelationDef,
    RelationKind,
)

RELATION_TYPES = frozenset(
    {"belongsTo", "hasOne", "hasMany", "hasAndBelongsToMany", "referencesMany", "embedsOne", "embedsMany"}
)
LEGACY_OWNER_KEYS = ("userId", "owner")
"""The properties LB3's `isOwner` reads before it follows `belongsTo` relations."""


@dataclass(frozen=True, slots=True)
class Relation:
    """One entry of a model's `relations`, with LoopBack's defaults still unapplied."""

    name: str
    kind: str
    target: str
    foreign_key: str | None = None
    through: str | None = None
    key_through: str | None = None
    property: str | None = None
    polymorphic: bool = False


def parse_relations(where: str, raw: Any, problems: list[str]) -> list[Relation]:
    """The relations of one model; each malformed entry is one line in `problems`."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: `relations` must be an object")
        return []
    relations = []
    for name, spec in raw.items():
        if not isinstance(spec, Mapping):
            problems.append(f"{where}, relation {name}: expected an object")
            continue
        kind, target = spec.get("type"), spec.get("model")
        if kind not in RELATION_TYPES:
            problems.append(f"{where}, relation {name}: type {kind!r} is not one of {sorted(RELATION_TYPES)}")
            continue
        polymorphic = spec.get("polymorphic")
        if not isinstance(target, str) and not polymorphic:
            problems.append(f"{where}, relation {name}: `model` must name the related model")
            continue
        relations.append(
            Relation(
                name=str(name),
                kind=str(kind),
                target=str(target) if isinstance(target, str) else "",
                foreign_key=_text(spec.get("foreignKey")),
                through=_text(spec.get("through")),
                key_through=_text(spec.get("keyThrough")),
                property=_text(spec.get("property")),
                polymorphic=bool(polymorphic),
            )
        )
    return relations


@dataclass
class KeyDeclarations:
    """Applies relations to parsed models, looking targets up through the loader's callbacks."""

    models: dict[str, ModelDef]
    id_type: Callable[[str], PropertyType | None]  # None: the target is unknown
    embedded: Callable[[str], EmbeddedType | None]
    plural: Callable[[str], str]
    warnings: list[str]
    resolved: dict[str, list[RelationDef]] = field(default_factory=dict)
    """Per model, its relations to other persisted models with their keys, as declared."""

    def apply(self, name: str, relations: list[Relation]) -> None:
        for relation in relations:
            self._apply(name, relation)

    def _apply(self, name: str, relation: Relation) -> None:
        kind, target = relation.kind, relation.target
        if kind in ("embedsOne", "embedsMany"):
            shape = self.embedded(target)
            if kind == "embedsOne":
                key = relation.property or _camel(target)
                self._declare(name, PropertyDef(key, PropertyType.OBJECT, embedded=shape), retype=False)
                self._resolve(name, relation, RelationKind.EMBEDS_ONE, key, "")
            else:
                key = relation.property or _camel(self.plural(target))
                prop = PropertyDef(key, PropertyType.ARRAY, PropertyType.OBJECT, default=[], embedded=shape)
                self._declare(name, prop, retype=False)
                self._resolve(name, relation, RelationKind.EMBEDS_MANY, key, "")
            return
        if relation.polymorphic:
            if kind == "belongsTo":
                self._declare(
                    name, PropertyDef(relation.foreign_key or _camel(f"{relation.name}_id"), PropertyType.ANY)
                )
                self._declare(name, PropertyDef(_camel(f"{relation.name}_type"), PropertyType.STRING))
            return
        target_id = self.id_type(target)
        if target_id is None:
            self.warnings.append(
                f"model {name}: relation {relation.name} names model {target!r}, which the app does not "
                "define; the relation is ignored"
            )
            return
        source = self.models[name]
        own_id = source.id_property.type
        target_key = self.models[target].id_name if target in self.models else "id"
        if kind == "belongsTo":
            key = relation.foreign_key or _camel(f"{relation.name}_id")
            self._declare(name, PropertyDef(key, target_id))
            self._resolve(name, relation, RelationKind.BELONGS_TO, key, target_key)
        elif kind == "referencesMany":
            key = relation.foreign_key or _camel(f"{target}_ids")
            self._declare(name, PropertyDef(key, PropertyType.ARRAY, target_id, default=[]), retype=False)
            self._resolve(name, relation, RelationKind.REFERENCES_MANY, key, target_key)
        elif relation.through is not None:
            from_key = relation.foreign_key or _camel(f"{name}_id")
            self._declare(relation.through, PropertyDef(from_key, own_id))
            to_key = relation.key_through or _camel(f"{target}_id")
            self._declare(relation.through, PropertyDef(to_key, target_id))
            through = RelationDef(
                relation.name,
                RelationKind.HAS_MANY_THROUGH,
                target,
                source.id_name,
                from_key,
                relation.through,
                to_key,
            )
            self.resolved.setdefault(name, []).append(through)
        elif kind in ("hasMany", "hasOne"):
            key = relation.foreign_key or _camel(f"{name}_id")
            self._declare(target, PropertyDef(key, own_id))
            relation_kind = RelationKind.HAS_MANY if kind == "hasMany" else RelationKind.HAS_ONE
            self._resolve(name, relation, relation_kind, source.id_name, key)

    def _resolve(self, name: str, relation: Relation, kind: RelationKind, key_from: str, key_to: str) -> None:
        found = RelationDef(relation.name, kind, relation.target, key_from, key_to)
        self.resolved.setdefault(name, []).append(found)

    def _declare(self, name: str, key: PropertyDef, *, retype: bool = True) -> None:
        """defineForeignKey: append `key`, or give a declared property of that name the key's type."""
        model = self.models.get(name)
        if model is None:
            return  # a skipped or embedded model: nothing of it is served
        existing = model.by_name.get(key.name)
        if existing is None:
            properties = (*model.properties, key)
        elif retype and not existing.is_id and existing.type is not key.type:
            retyped = dataclasses.replace(existing, type=key.type, item_type=None, embedded=None)
            properties = tuple(retyped if p is existing else p for p in model.properties)
        else:
            return
        self.models[name] = dataclasses.replace(model, properties=properties)


def resolve_owner(
    model: ModelDef, relations: list[Relation], *, explicit: bool, is_user_model: Callable[[str], bool]
) -> ModelDef:
    """The model with the owner property LB3 would use, when the file does not name one."""
    if explicit or model.owner_property in model.by_name:
        return model
    for key in LEGACY_OWNER_KEYS:
        if key in model.by_name:
            return dataclasses.replace(model, owner_property=key)
    for relation in relations:
        if relation.kind == "belongsTo" and not relation.polymorphic and is_user_model(relation.target):
            key = relation.foreign_key or _camel(f"{relation.name}_id")
            return dataclasses.replace(model, owner_property=key)
    return model


def _camel(text: str) -> str:
    """juggler's `i8n.camelize(text, true)`: `Author_id` → `authorId`."""
    return str(inflection.camelize(text, False))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
