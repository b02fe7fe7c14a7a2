"""`base` chains: a model whose base is another model of the app, flattened as LoopBack's `extend` does.

Pure functions over the raw JSON definitions, so the rest of the loader only ever sees one flat
definition per model. The rules are juggler's `ModelClass.extend` with loopback's default (legacy) merge
policy:

- properties: the model's own come first, then each base property it does not redeclare; the base's id
  properties are dropped when the model declares an id of its own;
- settings (every top-level key, `options` folded in): objects merge key by key recursively, lists
  concatenate (base first, repeated scalars once), any other value of the model replaces the base's;
- `name` and `base` are never inherited, and neither are `plural` and `http` (each model keeps its own
  route, where LoopBack would mount two models on one path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NOT_INHERITED = frozenset({"name", "base", "plural", "http"})


def settings_of(definition: Mapping[str, Any]) -> dict[str, Any]:
    """A definition's settings: its top-level keys with `options` folded in (options win), no properties."""
    settings = {k: v for k, v in definition.items() if k not in ("properties", "options")}
    options = definition.get("options")
    if isinstance(options, Mapping):
        settings.update(options)
    return settings


def extend(base: Mapping[str, Any], definition: Mapping[str, Any]) -> dict[str, Any]:
    """`definition` flattened onto its already flattened `base`."""
    own = definition.get("properties") or {}
    inherited = base.get("properties") or {}
    properties: dict[str, Any] = dict(own) if isinstance(own, Mapping) else {}
    declares_id = any(_is_id(spec) for spec in properties.values())
    if isinstance(inherited, Mapping):
        for name, spec in inherited.items():
            if name in properties or (declares_id and _is_id(spec)):
                continue
            properties[name] = spec
    base_settings = {k: v for k, v in settings_of(base).items() if k not in NOT_INHERITED}
    merged: dict[str, Any] = merge_settings(base_settings, settings_of(definition))
    merged["properties"] = properties
    return merged


def merge_settings(base: Any, own: Any) -> Any:
    """juggler's `mergeSettings`: what the model says, over what its base says."""
    if isinstance(own, list):
        merged = list(base) if isinstance(base, list) else []
        for item in own:
            if isinstance(item, (Mapping, list)) or item not in merged:
                merged.append(item)
        return merged
    if not isinstance(own, Mapping):
        return own
    result: dict[str, Any] = dict(base) if isinstance(base, Mapping) else {}
    for key, value in own.items():
        if isinstance(value, (Mapping, list)) and _js_truthy(result.get(key)):
            result[key] = merge_settings(result[key], value)
        else:
            result[key] = value
    return result


def _is_id(spec: Any) -> bool:
    return isinstance(spec, Mapping) and bool(spec.get("id"))


def _js_truthy(value: Any) -> bool:
    """JavaScript truthiness (an empty object or list is true there)."""
    return (
        value is not None and value is not False and not (isinstance(value, (int, float, str)) and not value)
    )
