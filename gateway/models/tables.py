"""Build real SQLModel table classes from model definitions, at run time.

Each gateway gets its own SQLAlchemy registry (and so its own `MetaData`), so two gateways with different
models can live in one process (tests do) and nothing is registered globally at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import registry as orm_registry
from sqlalchemy.types import TypeEngine
from sqlmodel import Field, SQLModel

from gateway.models.definition import ModelDef, PropertyDef, PropertyType, Registry, StrictMode

EXTRA_COLUMN = "_extra"
"""Holds the undeclared properties of a non-strict model, so what was posted is what is read back."""

_PYTHON_TYPES: dict[PropertyType, Any] = {
    PropertyType.STRING: Optional[str],  # noqa: UP045 - SQLModel reads these annotations at run time
    PropertyType.NUMBER: Optional[float],  # noqa: UP045
    PropertyType.BOOLEAN: Optional[bool],  # noqa: UP045
    PropertyType.DATE: Optional[Any],  # noqa: UP045
    PropertyType.OBJECT: Optional[Any],  # noqa: UP045
    PropertyType.ARRAY: Optional[Any],  # noqa: UP045
    PropertyType.ANY: Optional[Any],  # noqa: UP045
}


@dataclass(frozen=True, slots=True)
class ModelTables:
    """The SQLModel classes of one registry and the metadata that holds their tables."""

    metadata: MetaData
    base: type[SQLModel]
    classes: dict[str, type[SQLModel]]

    def table(self, model: ModelDef) -> Table:
        table = getattr(self.classes[model.name], "__table__")  # noqa: B009 - set by SQLModel's metaclass
        assert isinstance(table, Table)
        return table


def build_tables(registry: Registry) -> ModelTables:
    """Create one SQLModel table class per model, all in a fresh `MetaData`."""

    class Base(SQLModel, registry=orm_registry()):
        pass

    classes = {model.name: _table_class(Base, model) for model in registry.models}
    return ModelTables(metadata=Base.metadata, base=Base, classes=classes)


def _column_type(prop: PropertyDef) -> TypeEngine[Any]:
    if prop.is_id and prop.type is PropertyType.NUMBER:
        return BigInteger().with_variant(Integer, "sqlite")
    if prop.is_id:
        return String(255)
    column_types: dict[PropertyType, TypeEngine[Any]] = {
        PropertyType.STRING: Text(),
        PropertyType.NUMBER: Double(),
        PropertyType.BOOLEAN: Boolean(),
        PropertyType.DATE: DateTime(),
    }
    return column_types.get(prop.type, JSON(none_as_null=True))


def _table_class(base: type[SQLModel], model: ModelDef) -> type[SQLModel]:
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {
        "__tablename__": model.table_name,
        "__table_args__": {"sqlite_autoincrement": True},
        "__annotations__": annotations,
    }
    for prop in model.properties:
        column = Column(
            prop.name,
            _column_type(prop),
            primary_key=prop.is_id,
            autoincrement=prop.is_id and prop.generated and prop.type is PropertyType.NUMBER,
            nullable=not prop.is_id,
            index=prop.index and not prop.is_id,
        )
        attribute = _attribute_name(base, prop.name)
        annotations[attribute] = _PYTHON_TYPES[prop.type]
        namespace[attribute] = Field(default=None, sa_column=column)
    if model.strict is StrictMode.KEEP:
        attribute = _attribute_name(base, EXTRA_COLUMN)
        annotations[attribute] = Optional[Any]  # noqa: UP045
        namespace[attribute] = Field(default=None, sa_column=Column(EXTRA_COLUMN, JSON(none_as_null=True)))
    return type(model.name, (base,), namespace, table=True)


def _attribute_name(base: type[SQLModel], name: str) -> str:
    """The class attribute for a column; LoopBack property names like `metadata` or `json` would shadow
    SQLModel's own attributes, and only the column name matters to the queries."""
    if name.startswith(("_", "model_")) or hasattr(base, name):
        return f"gw_{name.lstrip('_')}_column"
    return name
