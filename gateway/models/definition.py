"""Model definitions as plain data: what a LoopBack model JSON says, normalised once.

Everything downstream (tables, validation, filters, REST, change objects) reads these frozen values;
nothing re-reads the JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class PropertyType(enum.Enum):
    """LoopBack property types that the gateway stores."""

    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    OBJECT = "object"
    ARRAY = "array"
    ANY = "any"

    @property
    def is_json(self) -> bool:
        """Stored in a JSON column; not comparable in filters."""
        return self in (PropertyType.OBJECT, PropertyType.ARRAY, PropertyType.ANY)


class StrictMode(enum.Enum):
    """What happens to properties a model does not declare (LoopBack's `strict`)."""

    KEEP = "keep"  # strict: false, LoopBack's default: unknown properties are stored and returned
    REJECT = "reject"  # strict: true / "validate" / "throw": a 422
    DROP = "drop"  # strict: "filter": silently removed


class _Missing(enum.Enum):
    MISSING = enum.auto()


MISSING = _Missing.MISSING
"""Marks a property without a default (None is a legitimate default)."""


@dataclass(frozen=True, slots=True)
class PropertyDef:
    """One declared property."""

    name: str
    type: PropertyType
    item_type: PropertyType | None = None  # for the `["string"]` array form
    required: bool = False
    default: Any = MISSING
    default_fn: str | None = None  # "now", "uuid", "uuidv4", "guid"
    is_id: bool = False
    generated: bool = False  # the database (or default_fn) assigns the value
    index: bool = False
    hidden: bool = False  # never returned or streamed (LoopBack's `hidden`)
    embedded: EmbeddedType | None = None  # an object (or each array item) of a `base: "Model"` model

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING or self.default_fn is not None


@dataclass(frozen=True, slots=True)
class EmbeddedType:
    """A model with `base: "Model"`: no table and no routes, only the shape of an embedded object.

    A property typed with it (`"type": "Address"`, `["Address"]`, or through `embedsOne`/`embedsMany`) is
    stored as JSON and its value is checked against these properties, as LoopBack builds the nested instance.
    """

    name: str
    properties: tuple[PropertyDef, ...]
    strict: StrictMode


class RelationKind(enum.Enum):
    """The relations the gateway serves: related rows in another served model's table, or (embeds) the
    embedded value held in one of the model's own properties."""

    BELONGS_TO = "belongsTo"
    HAS_ONE = "hasOne"
    HAS_MANY = "hasMany"
    HAS_MANY_THROUGH = "hasManyThrough"
    REFERENCES_MANY = "referencesMany"
    EMBEDS_ONE = "embedsOne"
    EMBEDS_MANY = "embedsMany"

    @property
    def to_many(self) -> bool:
        return self in (RelationKind.HAS_MANY, RelationKind.HAS_MANY_THROUGH, RelationKind.REFERENCES_MANY)

    @property
    def embeds(self) -> bool:
        return self in (RelationKind.EMBEDS_ONE, RelationKind.EMBEDS_MANY)


@dataclass(frozen=True, slots=True)
class RelationDef:
    """A relation with LoopBack's defaults applied: rows of `target` whose `key_to` equals the source's
    `key_from` (each element of it, for referencesMany). Through a model, `key_to` is on `through` and
    `key_through` there holds the target's id. For embeds, `key_from` is the property holding the value."""

    name: str
    kind: RelationKind
    target: str
    key_from: str
    key_to: str
    through: str | None = None
    key_through: str | None = None


@dataclass(frozen=True, slots=True)
class AclEntry:
    """One entry of the model JSON `acls` array, kept as written."""

    access_type: str = "*"
    principal_type: str = "ROLE"
    principal_id: str = "$everyone"
    permission: str = "ALLOW"
    property: str | tuple[str, ...] = "*"


@dataclass(frozen=True, slots=True)
class ModelDef:
    """A persisted model: its REST plural, its table, and its properties in declaration order.

    `properties` includes the id property at the position LoopBack reports it: an injected id comes last,
    a declared id where it was declared. JSON replies and change objects follow this order.
    """

    name: str
    plural: str
    table_name: str
    properties: tuple[PropertyDef, ...]
    id_name: str
    force_id: bool
    strict: StrictMode
    acls: tuple[AclEntry, ...] = ()
    owner_property: str = "ownerId"
    relations: tuple[RelationDef, ...] = ()
    by_name: dict[str, PropertyDef] = field(init=False, repr=False, compare=False)
    relation: dict[str, RelationDef] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.properties})
        object.__setattr__(self, "relation", {r.name: r for r in self.relations})

    @property
    def id_property(self) -> PropertyDef:
        return self.by_name[self.id_name]

    @property
    def stream(self) -> str:
        """The change-stream name: the model name, which is unique in a registry."""
        return self.name


@dataclass(frozen=True, slots=True)
class Registry:
    """All models served by one gateway, looked up by name or by REST plural.

    `warnings` are what the loader found that LoopBack would do and the gateway will not (skipped models,
    routes not served), one line each, for the start log.
    """

    models: tuple[ModelDef, ...]
    warnings: tuple[str, ...] = ()
    by_plural: dict[str, ModelDef] = field(init=False, repr=False, compare=False)
    by_name: dict[str, ModelDef] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_plural", {m.plural: m for m in self.models})
        object.__setattr__(self, "by_name", {m.name: m for m in self.models})
