"""Read an LB3 app's model directory (or one YAML/JSON file listing models) into a `Registry`, as LB3 boots.

An LB3 user points `GATEWAY_MODELS` at `common/models/`. The loader reads every definition, follows `base`
chains (inheritance.py), keeps the models `server/model-config.json` lists (appconfig.py), turns
`base: "Model"` models into embedded object types, skips models built on LoopBack's own bases (`User`, ...)
with a warning, and applies relations (relations.py). Every problem in the directory is collected and
reported at once, one line each, so an app is fixed in one pass rather than one start per problem.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import inflection
import yaml

from gateway.models.appconfig import ModelConfig, find_model_config, read_model_config
from gateway.models.definition import (
    MISSING,
    AclEntry,
    EmbeddedType,
    ModelDef,
    PropertyDef,
    PropertyType,
    Registry,
    StrictMode,
)
from gateway.models.geopoint import GEO_POINT
from gateway.models.inheritance import extend
from gateway.models.relations import KeyDeclarations, Relation, parse_relations, resolve_owner
from gateway.models.validation import NOW, coerce

PERSISTED_BASE = "PersistedModel"
EMBEDDED_BASE = "Model"
BUILTIN_BASES = frozenset(
    {
        "User",
        "AccessToken",
        "ACL",
        "Role",
        "RoleMapping",
        "Application",
        "Email",
        "Change",
        "Checkpoint",
        "Scope",
        "KeyValueModel",
    }
)
"""LoopBack's own models, which the gateway does not implement: an app's model built on one is skipped."""
USER_BASE = "User"
EMBEDDED_RELATIONS = ("embedsOne", "embedsMany")
DEFAULT_FUNCTIONS = {
    PropertyType.STRING: frozenset({"uuid", "uuidv4", "guid"}),
    PropertyType.DATE: frozenset({"now"}),
}
TYPE_ALIASES = {
    "text": PropertyType.STRING,
    "objectid": PropertyType.STRING,
    "json": PropertyType.ANY,
    "buffer": PropertyType.ANY,
}
"""juggler's other schema types, stored as the nearest type the gateway has."""
RESERVED_NAMES = frozenset({"_extra"})
UNSERVED_KEYS = {
    "trackChanges": "the change-tracking routes (/diff, /changes, /checkpoint, /{id}/changes/last, ...)",
    "methods": "its custom remote methods",
    "remoting": "its `remoting` settings (routes it disables are served)",
    "mixins": "its mixins (JavaScript the gateway does not run)",
    "scope": "its default `scope` (reads are not narrowed by it)",
    "scopes": "its named `scopes` (their routes)",
}


class ModelDefinitionError(ValueError):
    """Model definitions the gateway cannot serve: one line per problem, each naming where it is."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_registry(path: Path, model_config: Path | None = None) -> Registry:
    """Load the app's models under `path`: a directory of `*.json` files, or one `.json`/`.yaml` file.

    `model_config` is the app's model-config.json; without it one is looked for where LB3's layout puts it,
    and without either every model in `path` is served.
    """
    if not path.exists():
        raise ModelDefinitionError(f"{path}: no such file or directory")
    problems: list[str] = []
    config_path = model_config or find_model_config(path)
    config = None
    if config_path is not None:
        try:
            config = read_model_config(config_path)
        except ValueError as exc:
            problems.append(str(exc))
    sources: list[tuple[str, Any]] = []
    if path.is_dir():
        # LB3 reads every directory of model-config's `_meta.sources` (common/models and server/models)
        directories = dict.fromkeys([path.resolve(), *(config.sources if config else ())])
        files = [file for directory in directories for file in sorted(directory.glob("*.json"))]
        if not files:
            raise ModelDefinitionError(f"{path}: the directory holds no model JSON files")
        for file in files:
            try:
                sources.append((str(file), _read(file)))
            except ModelDefinitionError as exc:
                problems.extend(exc.problems)
    else:
        document = _read(path)
        sources = [(str(path), d) for d in _listed_models(str(path), document)]
    return _App(sources, config, problems).registry()


def build_registry(models: Iterable[ModelDef], warnings: Iterable[str] = ()) -> Registry:
    """Check that names and plurals are unique across models (plurals ignoring case, as routes match)."""
    models = tuple(models)
    problems = []
    seen_names: set[str] = set()
    seen_plurals: set[str] = set()
    for model in models:
        if model.name in seen_names:
            problems.append(f"model {model.name!r} is defined twice")
        if model.plural.lower() in seen_plurals:
            problems.append(f"plural {model.plural!r} of model {model.name!r} is used twice")
        seen_names.add(model.name)
        seen_plurals.add(model.plural.lower())
    if problems:
        raise ModelDefinitionError(*problems)
    warnings = (
        tuple(warnings) if models else (*warnings, "no models are served: only /healthz, /readyz, /metrics")
    )
    return Registry(models, warnings)


def parse_model(source: str, definition: Mapping[str, Any]) -> ModelDef:
    """Normalise one stand-alone persisted model definition, applying LoopBack's defaults."""
    problems: list[str] = []
    model = _parse_model(source, definition, problems, _Shapes(None), [])
    if model is None or problems:
        raise ModelDefinitionError(*problems)
    return model


@dataclass
class _App:
    """One app's definitions on their way to a registry; problems and warnings accumulate as it goes."""

    sources: list[tuple[str, Any]]
    config: ModelConfig | None
    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    raw: dict[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)
    flat: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)
    shapes: dict[str, EmbeddedType | None] = field(default_factory=dict)

    def registry(self) -> Registry:
        for source, definition in self.sources:
            name = definition.get("name") if isinstance(definition, Mapping) else None
            if not isinstance(definition, Mapping):
                self.problems.append(f"{source}: a model definition must be an object")
            elif not isinstance(name, str) or not name.isidentifier():
                self.problems.append(f"{source}: `name` must be an identifier, got {name!r}")
            elif name in self.raw:
                self.problems.append(
                    f"{source}: model {name!r} is defined twice (also in {self.raw[name][0]})"
                )
            else:
                self.raw[name] = (source, definition)
        models: dict[str, ModelDef] = {}
        relations: dict[str, list[Relation]] = {}
        explicit_owner: dict[str, bool] = {}
        for name, (source, _definition) in self.raw.items():
            root = self.root(name)
            flat = self.flatten(name)
            if root != PERSISTED_BASE or flat is None:
                if root in BUILTIN_BASES and self.served(name):
                    self.warnings.append(
                        f"{source}: model {name} is not served: it is based on LoopBack's built-in {root}, "
                        "which the gateway does not implement"
                    )
                elif root == EMBEDDED_BASE and self.config is not None and self.served(name):
                    self.warnings.append(
                        f"{source}: model {name} is not served: its base is Model (not persisted), so LB3 "
                        "routes only its remote methods, which are JavaScript"
                    )
                continue
            model = _parse_model(
                source, {**flat, "base": PERSISTED_BASE}, self.problems, self.shapes_by_name(), self.warnings
            )
            if model is None:
                continue
            models[name] = model
            relations[name] = parse_relations(f"{source}: model {name}", flat.get("relations"), self.problems)
            explicit_owner[name] = "ownerProperty" in flat
        keys = KeyDeclarations(models, self.id_type, self.shape, self.plural_of, self.warnings)
        for name, model_relations in relations.items():
            keys.apply(name, model_relations)
        served = []
        for name, model in keys.models.items():
            if not self.served(name):
                continue
            model = resolve_owner(
                model, relations[name], explicit=explicit_owner[name], is_user_model=self.is_user_model
            )
            related = tuple(
                r
                for r in keys.resolved.get(name, ())
                if r.kind.embeds
                or all(m in keys.models and self.served(m) for m in (r.target, r.through or r.target))
            )
            self.warn_unserved(name, relations[name], {r.name for r in related})
            served.append(dataclasses.replace(model, relations=related))
        if self.config is not None:
            for name in self.config.public:
                if name not in self.raw and name not in BUILTIN_BASES:
                    self.warnings.append(
                        f"{self.config.source}: model {name} is listed but not in the models directory"
                    )
        if self.problems:
            raise ModelDefinitionError(*self.problems)
        return build_registry(served, self.warnings)

    def served(self, name: str) -> bool:
        """Listed in model-config.json and public, or every model when there is no model-config."""
        return self.config is None or self.config.public.get(name, False)

    def root(self, name: str, seen: tuple[str, ...] = ()) -> str | None:
        """The LoopBack base at the end of `name`'s chain; None (and a problem) when there is none."""
        base = _base_of(self.raw[name][1])
        if not isinstance(base, str):
            return None
        if base in self.raw and base != name:
            if base in seen:
                return None
            return self.root(base, (*seen, name))
        if base in (PERSISTED_BASE, EMBEDDED_BASE) or base in BUILTIN_BASES:
            return base
        return None

    def flatten(self, name: str, seen: tuple[str, ...] = ()) -> Mapping[str, Any] | None:
        """`name`'s definition with its app bases merged in; None (and one problem) if its chain is broken."""
        if name in self.flat:
            return self.flat[name]
        source, definition = self.raw[name]
        where = f"{source}: model {name}"
        base = _base_of(definition)
        result: Mapping[str, Any] | None = None
        if not isinstance(base, str):
            self.problems.append(f"{where}: `base` must name a model")
        elif base in seen or base == name:
            self.problems.append(f"{where}: its base chain loops ({' -> '.join((*seen, name, base))})")
        elif base in self.raw:
            parent = self.flatten(base, (*seen, name))
            result = None if parent is None else extend(parent, definition)
        elif base in (PERSISTED_BASE, EMBEDDED_BASE) or base in BUILTIN_BASES:
            result = extend({}, definition)
        else:
            self.problems.append(
                f"{where}: base {base!r} is neither a model of the app nor a LoopBack base "
                f"({PERSISTED_BASE}, {EMBEDDED_BASE}, {', '.join(sorted(BUILTIN_BASES))})"
            )
        self.flat[name] = result
        return result

    def shapes_by_name(self) -> _Shapes:
        return _Shapes(self)

    def shape(self, name: str) -> EmbeddedType | None:
        """The embedded object type a model name stands for when used as a property type."""
        if name in self.shapes:
            return self.shapes[name]
        self.shapes[name] = None  # a model that contains itself is checked one level deep
        flat = self.flatten(name) if name in self.raw else None
        if flat is None:
            return None
        source = self.raw[name][0]
        where = f"{source}: model {name}"
        raw_properties = flat.get("properties") or {}
        hidden = set(flat.get("hidden") or ())
        properties = []
        for prop_name, spec in raw_properties.items() if isinstance(raw_properties, Mapping) else ():
            prop = _parse_property(
                where,
                prop_name,
                spec,
                prop_name in hidden,
                self.problems,
                self.shapes_by_name(),
                self.warnings,
            )
            if prop is not None:
                properties.append(prop)
        strict = _strict_mode(where, flat.get("strict", False), self.problems)
        shape = EmbeddedType(name, tuple(properties), strict)
        self.shapes[name] = shape
        return shape

    def id_type(self, name: str) -> PropertyType | None:
        """The id type of a relation's target: LoopBack's own models have numeric ids."""
        if name in BUILTIN_BASES:
            return PropertyType.NUMBER
        flat = self.flatten(name) if name in self.raw else None
        if flat is None:
            return None
        for spec in (flat.get("properties") or {}).values():
            if isinstance(spec, Mapping) and spec.get("id"):
                kind = _type_name(spec.get("type", "any"))
                return PropertyType.STRING if kind == "string" else PropertyType.NUMBER
        return PropertyType.NUMBER

    def plural_of(self, name: str) -> str:
        definition = self.raw[name][1] if name in self.raw else {}
        plural = definition.get("plural") or (definition.get("options") or {}).get("plural")
        return plural if isinstance(plural, str) and plural else str(inflection.pluralize(name))

    def is_user_model(self, name: str) -> bool:
        return name == USER_BASE or (name in self.raw and self.root(name) == USER_BASE)

    def warn_unserved(self, name: str, relations: list[Relation], related: set[str]) -> None:
        """One warning naming the routes LB3 would serve for this model and the gateway does not."""
        source, _ = self.raw[name]
        flat = self.flatten(name) or {}
        missing = [text for key, text in UNSERVED_KEYS.items() if flat.get(key)]
        path = (self.raw[name][1].get("http") or {}).get("path")
        if isinstance(path, str) and path.strip("/") != self.plural_of(name):
            missing.append(f"its custom http.path {path!r} (routes are served under its plural)")
        unrelated = [r.name for r in relations if r.kind not in EMBEDDED_RELATIONS and r.name not in related]
        if unrelated:
            missing.append(f"the relations {', '.join(unrelated)} (their targets are not served)")
        if missing:
            self.warnings.append(f"{source}: model {name}: not served: {'; '.join(missing)}")


@dataclass
class _Shapes:
    """Resolves a property's type name to an app model's embedded shape, lazily (models may nest)."""

    app: _App | None

    def known(self, name: str) -> bool:
        return self.app is not None and (name in self.app.raw or name in BUILTIN_BASES)

    def get(self, name: str) -> EmbeddedType | None:
        return None if self.app is None or name in BUILTIN_BASES else self.app.shape(name)


def _base_of(definition: Mapping[str, Any]) -> Any:
    return definition.get("base") or (definition.get("options") or {}).get("base") or PERSISTED_BASE


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


def _parse_model(
    source: str, definition: Mapping[str, Any], problems: list[str], shapes: _Shapes, warnings: list[str]
) -> ModelDef | None:
    """One persisted model, or None with its problems appended (as many as can be found)."""
    if not isinstance(definition, Mapping):
        problems.append(f"{source}: a model definition must be an object")
        return None
    name = definition.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        problems.append(f"{source}: `name` must be an identifier, got {name!r}")
        return None
    where = f"{source}: model {name}"
    start = len(problems)
    base = definition.get("base", PERSISTED_BASE)
    if base != PERSISTED_BASE:
        problems.append(f"{where}: base {base!r} is not supported (only {PERSISTED_BASE})")
        return None
    options = definition.get("options") or {}
    plural = definition.get("plural") or options.get("plural") or inflection.pluralize(name)
    if not isinstance(plural, str) or not plural or "/" in plural:
        problems.append(f"{where}: `plural` must be a non-empty path segment")
    raw_properties = definition.get("properties") or {}
    if not isinstance(raw_properties, Mapping):
        problems.append(f"{where}: `properties` must be an object")
        raw_properties = {}
    hidden = set(definition.get("hidden") or options.get("hidden") or ())
    properties: list[PropertyDef] = []
    for prop_name, spec in raw_properties.items():
        prop = _parse_property(where, prop_name, spec, prop_name in hidden, problems, shapes, warnings)
        if prop is not None:
            properties.append(prop)
    ids = [p for p in properties if p.is_id]
    id_injection = definition.get("idInjection", options.get("idInjection", True))
    id_property: PropertyDef | None = None
    chosen_by_client = False  # LB3's `generated` flag as written: what forceId "auto" follows
    if len(ids) > 1:
        problems.append(f"{where}: composite ids are not supported")
    elif ids:
        id_property = ids[0]
        spec = raw_properties.get(id_property.name)
        chosen_by_client = not (isinstance(spec, Mapping) and spec.get("generated") is True)
        if id_property.type not in (PropertyType.NUMBER, PropertyType.STRING):
            problems.append(f"{where}: the id property must be a number or a string")
    elif id_injection:
        # juggler injects `id` over a declared non-id `id`, keeping its place among the properties.
        id_property = PropertyDef("id", PropertyType.NUMBER, is_id=True, generated=True)
        at = next((i for i, p in enumerate(properties) if p.name == "id"), len(properties))
        properties[at : at + 1] = [id_property]
    else:
        problems.append(f"{where}: `idInjection` is false but no property has `id: true`")
    force_id = definition.get("forceId", options.get("forceId", "auto"))
    if force_id == "auto":
        force_id = not chosen_by_client
    strict = _strict_mode(where, definition.get("strict", options.get("strict", False)), problems)
    table_name = _table_name(where, name, options, problems)
    acls = []
    for raw_acl in definition.get("acls") or ():
        try:
            acls.append(_parse_acl(where, raw_acl))
        except ModelDefinitionError as exc:
            problems.extend(exc.problems)
    if len(problems) > start or id_property is None or not isinstance(plural, str):
        return None
    return ModelDef(
        name=name,
        plural=plural,
        table_name=table_name,
        properties=tuple(properties),
        id_name=id_property.name,
        force_id=bool(force_id),
        strict=strict,
        acls=tuple(acls),
        owner_property=str(options.get("ownerProperty", definition.get("ownerProperty", "ownerId"))),
    )


def _parse_property(
    where: str,
    name: str,
    spec: Any,
    hidden: bool,
    problems: list[str],
    shapes: _Shapes,
    warnings: list[str],
) -> PropertyDef | None:
    where = f"{where}, property {name}"
    try:
        return _property(where, name, spec, hidden, shapes, warnings)
    except ModelDefinitionError as exc:
        problems.extend(exc.problems)
        return None


def _property(
    where: str, name: str, spec: Any, hidden: bool, shapes: _Shapes, warnings: list[str]
) -> PropertyDef:
    if not name.isidentifier() or name in RESERVED_NAMES:
        raise ModelDefinitionError(f"{where}: not a usable property name")
    if isinstance(spec, (str, list)):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise ModelDefinitionError(f"{where}: expected a type name or an object")
    prop_type, item_type, embedded = _parse_type(where, spec.get("type", "any"), shapes, warnings)
    is_id = bool(spec.get("id", False))
    default_fn = spec.get("defaultFn")
    if default_fn is not None and not any(default_fn in names for names in DEFAULT_FUNCTIONS.values()):
        warnings.append(f"{where}: defaultFn {default_fn!r} is not a LoopBack default function: not applied")
        default_fn = None  # juggler logs "Unknown default value provider" and carries on
    if default_fn is not None and default_fn not in DEFAULT_FUNCTIONS.get(prop_type, ()):
        raise ModelDefinitionError(
            f"{where}: defaultFn {default_fn!r} does not apply to type {prop_type.value}"
        )
    generated = bool(spec.get("generated", is_id and prop_type is PropertyType.NUMBER)) or (
        is_id and default_fn is not None
    )
    if generated and is_id and prop_type is PropertyType.STRING and default_fn is None:
        raise ModelDefinitionError(f'{where}: a generated string id needs `defaultFn: "uuid"`')
    prop = PropertyDef(
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
        embedded=embedded,
    )
    return dataclasses.replace(prop, default=_usable_default(where, prop, warnings))


def _usable_default(where: str, prop: PropertyDef, warnings: list[str]) -> Any:
    """The default to apply, converted as juggler stores it. One LB3 could only store as null (or that
    makes every create fail) is refused at start, never a 500 or a 422 at the first create."""
    default = prop.default
    if default is MISSING or default is None or (prop.type is PropertyType.DATE and default == NOW):
        return default
    try:
        coerce(prop, default)
        return default
    except (ValueError, OverflowError, OSError):
        pass
    if prop.type is PropertyType.NUMBER and (isinstance(default, bool) or default == ""):
        return float(default or 0)  # JavaScript's Number(): false → 0, true → 1, "" → 0
    if prop.embedded is GEO_POINT:
        warnings.append(f"{where}: default {json.dumps(default)} is not a GeoPoint: not applied")
        return MISSING
    raise ModelDefinitionError(f"{where}: default {json.dumps(default)} is not a valid {prop.type.value}")


def _type_name(raw: Any) -> str:
    return raw.lower() if isinstance(raw, str) else ""


def _parse_type(
    where: str, raw: Any, shapes: _Shapes, warnings: list[str]
) -> tuple[PropertyType, PropertyType | None, EmbeddedType | None]:
    """(type, item type of an array, embedded shape of the object or of each item)."""
    if isinstance(raw, list):
        if len(raw) > 1:
            raise ModelDefinitionError(f"{where}: an array type lists one item type, got {raw!r}")
        if not raw:
            return PropertyType.ARRAY, PropertyType.ANY, None
        item, _, shape = _parse_type(where, raw[0], shapes, warnings)
        return PropertyType.ARRAY, item, shape
    if isinstance(raw, Mapping):
        return PropertyType.OBJECT, None, None  # an anonymous nested model: any object
    if not isinstance(raw, str):
        raise ModelDefinitionError(f"{where}: type must be a string or a one-element list, got {raw!r}")
    lowered = raw.lower()
    if lowered in {t.value for t in PropertyType}:
        return PropertyType(lowered), None, None
    if lowered in TYPE_ALIASES:
        return TYPE_ALIASES[lowered], None, None
    if lowered == "geopoint":
        return PropertyType.OBJECT, None, GEO_POINT
    if shapes.known(raw):
        return PropertyType.OBJECT, None, shapes.get(raw)
    warnings.append(
        f"{where}: type {raw!r} is neither a LoopBack type nor a model of the app: stored as any value"
    )
    return PropertyType.ANY, None, None


def _strict_mode(where: str, raw: Any, problems: list[str]) -> StrictMode:
    if raw is False or raw is None:
        return StrictMode.KEEP
    if raw is True or raw in ("validate", "throw"):
        return StrictMode.REJECT
    if raw == "filter":
        return StrictMode.DROP
    problems.append(f'{where}: `strict` must be true, false, "validate", "throw" or "filter"')
    return StrictMode.KEEP


def _table_name(where: str, name: str, options: Mapping[str, Any], problems: list[str]) -> str:
    table = options.get("table") or (options.get("postgresql") or {}).get("table") or name.lower()
    if not isinstance(table, str) or not table.replace("_", "a").isalnum() or table.startswith("gateway_"):
        problems.append(f"{where}: table name {table!r} is not usable")
        return name.lower()
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
