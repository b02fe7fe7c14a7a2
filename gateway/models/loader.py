"""Read LoopBack model-definition JSON (or one YAML/JSON file listing models) into a `Registry`.

An LB3 user copies `common/models/*.json` into a directory and points `GATEWAY_MODELS` at it. Keys the
gateway does not act on (`relations`, `methods`, `mixins`, ...) are ignored, so those files load as they are;
anything the gateway cannot honour faithfully (an unknown type, a non-persisted base) is an error that names
the file, the model and the property.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import inflection
import yaml

from gateway.models.definition import (
    MISSING,
    AclEntry,
    ModelDef,
    PropertyDef,
    PropertyType,
    Registry,
    StrictMode,
)

PERSISTED_BASES = frozenset({"PersistedModel"})
DEFAULT_FUNCTIONS = {
    PropertyType.STRING: frozenset({"uuid", "uuidv4", "guid"}),
    PropertyType.DATE: frozenset({"now"}),
}
RESERVED_NAMES = frozenset({"_extra"})


class ModelDefinitionError(ValueError):
    """A model definition the gateway cannot serve; the message names where the problem is."""


def load_registry(path: Path) -> Registry:
    """Load every model under `path`: a directory of `*.json` files, or one `.json`/`.yaml` file."""
    if not path.exists():
        raise ModelDefinitionError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise ModelDefinitionError(f"{path}: the directory holds no model JSON files")
        raw = [(str(f), _read(f)) for f in files]
    else:
        document = _read(path)
        raw = [(str(path), d) for d in _listed_models(str(path), document)]
    models = [parse_model(source, definition) for source, definition in raw]
    return build_registry(models)


def build_registry(models: Iterable[ModelDef]) -> Registry:
    """Check that names and plurals are unique across models."""
    models = tuple(models)
    seen_names: set[str] = set()
    seen_plurals: set[str] = set()
    for model in models:
        if model.name in seen_names:
            raise ModelDefinitionError(f"model {model.name!r} is defined twice")
        if model.plural in seen_plurals:
            raise ModelDefinitionError(f"plural {model.plural!r} of model {model.name!r} is used twice")
        seen_names.add(model.name)
        seen_plurals.add(model.plural)
    if not models:
        raise ModelDefinitionError("no models are defined")
    return Registry(models)


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ModelDefinitionError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {exc}") from exc


def _listed_models(source: str, document: Any) -> list[Mapping[str, Any]]:
    """A single file holds one model, a list of models, or `{"models": ...}` / a mapping of name → model."""
    if isinstance(document, Mapping) and "models" in document:
        document = document["models"]
    if isinstance(document, list):
        return document
    if isinstance(document, Mapping):
        if "properties" in document or "name" in document:
            return [document]
        return [{"name": name, **(body or {})} for name, body in document.items()]
    raise ModelDefinitionError(f"{source}: expected a model, a list of models or a mapping of models")


def parse_model(source: str, definition: Mapping[str, Any]) -> ModelDef:
    """Normalise one LoopBack model definition, applying LoopBack's defaults."""
    if not isinstance(definition, Mapping):
        raise ModelDefinitionError(f"{source}: a model definition must be an object")
    name = definition.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ModelDefinitionError(f"{source}: `name` must be an identifier, got {name!r}")
    where = f"{source}: model {name}"
    base = definition.get("base", "PersistedModel")
    if base not in PERSISTED_BASES:
        raise ModelDefinitionError(f"{where}: base {base!r} is not supported (only PersistedModel)")
    options = definition.get("options") or {}
    plural = definition.get("plural") or options.get("plural") or inflection.pluralize(name)
    if not isinstance(plural, str) or not plural or "/" in plural:
        raise ModelDefinitionError(f"{where}: `plural` must be a non-empty path segment")

    raw_properties = definition.get("properties") or {}
    if not isinstance(raw_properties, Mapping):
        raise ModelDefinitionError(f"{where}: `properties` must be an object")
    hidden = set(definition.get("hidden") or options.get("hidden") or ())
    properties = [
        _parse_property(where, prop_name, spec, hidden=prop_name in hidden)
        for prop_name, spec in raw_properties.items()
    ]
    ids = [p for p in properties if p.is_id]
    if len(ids) > 1:
        raise ModelDefinitionError(f"{where}: composite ids are not supported")
    id_injection = definition.get("idInjection", options.get("idInjection", True))
    if ids:
        id_property = ids[0]
    elif id_injection:
        id_property = PropertyDef("id", PropertyType.NUMBER, is_id=True, generated=True)
        properties.append(id_property)
    else:
        raise ModelDefinitionError(f"{where}: `idInjection` is false but no property has `id: true`")
    if id_property.type not in (PropertyType.NUMBER, PropertyType.STRING):
        raise ModelDefinitionError(f"{where}: the id property must be a number or a string")

    force_id = definition.get("forceId", options.get("forceId", "auto"))
    if force_id == "auto":
        force_id = id_property.generated
    return ModelDef(
        name=name,
        plural=plural,
        table_name=_table_name(where, name, options),
        properties=tuple(properties),
        id_name=id_property.name,
        force_id=bool(force_id),
        strict=_strict_mode(where, definition.get("strict", options.get("strict", False))),
        acls=tuple(_parse_acl(where, acl) for acl in definition.get("acls") or ()),
        owner_property=str(options.get("ownerProperty", "ownerId")),
    )


def _parse_property(where: str, name: str, spec: Any, *, hidden: bool) -> PropertyDef:
    where = f"{where}, property {name}"
    if not name.isidentifier() or name in RESERVED_NAMES:
        raise ModelDefinitionError(f"{where}: not a usable property name")
    if isinstance(spec, (str, list)):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise ModelDefinitionError(f"{where}: expected a type name or an object")
    prop_type, item_type = _parse_type(where, spec.get("type", "any"))
    is_id = bool(spec.get("id", False))
    default_fn = spec.get("defaultFn")
    if default_fn is not None and default_fn not in DEFAULT_FUNCTIONS.get(prop_type, ()):
        raise ModelDefinitionError(
            f"{where}: defaultFn {default_fn!r} does not apply to type {prop_type.value}"
        )
    generated = bool(spec.get("generated", is_id and prop_type is PropertyType.NUMBER)) or (
        is_id and default_fn is not None
    )
    if generated and is_id and prop_type is PropertyType.STRING and default_fn is None:
        raise ModelDefinitionError(f'{where}: a generated string id needs `defaultFn: "uuid"`')
    return PropertyDef(
        name=name,
        type=prop_type,
        item_type=item_type,
        required=bool(spec.get("required", False)),
        default=spec.get("default", MISSING),
        default_fn=default_fn,
        is_id=is_id,
        generated=generated,
        index=bool(spec.get("index", False)) or bool(spec.get("unique", False)),
        hidden=hidden,
    )


def _parse_type(where: str, raw: Any) -> tuple[PropertyType, PropertyType | None]:
    if isinstance(raw, list):
        if len(raw) > 1:
            raise ModelDefinitionError(f"{where}: an array type lists one item type, got {raw!r}")
        item = _parse_type(where, raw[0])[0] if raw else PropertyType.ANY
        return PropertyType.ARRAY, item
    if not isinstance(raw, str):
        raise ModelDefinitionError(f"{where}: type must be a string or a one-element list, got {raw!r}")
    try:
        return PropertyType(raw.lower()), None
    except ValueError:
        known = ", ".join(t.value for t in PropertyType)
        raise ModelDefinitionError(f"{where}: type {raw!r} is not supported (use one of {known})") from None


def _strict_mode(where: str, raw: Any) -> StrictMode:
    if raw is False or raw is None:
        return StrictMode.KEEP
    if raw is True or raw in ("validate", "throw"):
        return StrictMode.REJECT
    if raw == "filter":
        return StrictMode.DROP
    raise ModelDefinitionError(f'{where}: `strict` must be true, false, "validate", "throw" or "filter"')


def _table_name(where: str, name: str, options: Mapping[str, Any]) -> str:
    table = options.get("table") or (options.get("postgresql") or {}).get("table") or name.lower()
    if not isinstance(table, str) or not table.replace("_", "a").isalnum() or table.startswith("gateway_"):
        raise ModelDefinitionError(f"{where}: table name {table!r} is not usable")
    return table


ACCESS_TYPES = frozenset({"READ", "WRITE", "EXECUTE", "REPLICATE", "*"})
PERMISSIONS = frozenset({"ALLOW", "DENY", "ALARM", "AUDIT", "DEFAULT"})


def _parse_acl(where: str, raw: Any) -> AclEntry:
    if not isinstance(raw, Mapping):
        raise ModelDefinitionError(f"{where}: each entry of `acls` must be an object")
    access_type = str(raw.get("accessType", "*"))
    permission = str(raw.get("permission", "ALLOW"))
    if access_type not in ACCESS_TYPES:
        raise ModelDefinitionError(
            f"{where}: acl accessType {access_type!r} is not one of {sorted(ACCESS_TYPES)}"
        )
    if permission not in PERMISSIONS:
        raise ModelDefinitionError(
            f"{where}: acl permission {permission!r} is not one of {sorted(PERMISSIONS)}"
        )
    prop = raw.get("property", "*")
    return AclEntry(
        access_type=access_type,
        principal_type=str(raw.get("principalType", "ROLE")),
        principal_id=str(raw.get("principalId", "$everyone")),
        permission=permission,
        property=tuple(prop) if isinstance(prop, list) else str(prop),
    )
