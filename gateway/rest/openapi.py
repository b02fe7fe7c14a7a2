"""OpenAPI descriptions of the model routes, built from the model definitions.

The routes parse their own bodies (to answer in LoopBack's error format), so FastAPI cannot infer the
schemas; these helpers hand them over through `openapi_extra` and `responses`, and `model_schemas` fills
`components/schemas` with one schema per model.
"""

from __future__ import annotations

from typing import Any

from gateway.models.definition import ModelDef, PropertyDef, PropertyType

_JSON_TYPES: dict[PropertyType, dict[str, Any]] = {
    PropertyType.STRING: {"type": "string"},
    PropertyType.NUMBER: {"type": "number"},
    PropertyType.BOOLEAN: {"type": "boolean"},
    PropertyType.DATE: {"type": "string", "format": "date-time"},
    PropertyType.OBJECT: {"type": "object"},
    PropertyType.ARRAY: {"type": "array", "items": {}},
    PropertyType.ANY: {},
}

_PARAMETER_DOCS = {
    "filter": 'A LoopBack filter: JSON such as {"where":{"done":false},"order":"id DESC","limit":10}, '
    "or the bracket form filter[where][done]=false",
    "where": 'A LoopBack where clause: JSON such as {"done":true}, or the bracket form where[done]=true',
}


def property_schema(prop: PropertyDef) -> dict[str, Any]:
    schema = dict(_JSON_TYPES[prop.type])
    if prop.type is PropertyType.NUMBER and prop.is_id:
        schema = {"type": "integer"}
    if prop.item_type is not None:
        schema["items"] = dict(_JSON_TYPES[prop.item_type])
    return schema


def model_schemas(models: tuple[ModelDef, ...]) -> dict[str, Any]:
    """`components/schemas` entries: one per model."""
    schemas: dict[str, Any] = {}
    for model in models:
        properties = {p.name: property_schema(p) for p in model.properties if not p.hidden}
        required = [p.name for p in model.properties if p.required and not p.is_id]
        schema: dict[str, Any] = {"type": "object", "title": model.name, "properties": properties}
        if required:
            schema["required"] = required
        schemas[model.name] = schema
    return schemas


class RouteDocs:
    """`openapi_extra` / `responses` fragments for the routes of one model."""

    def __init__(self, model: ModelDef) -> None:
        self._ref = {"$ref": f"#/components/schemas/{model.name}"}

    def _json(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": schema}}}

    def params(self, *names: str) -> dict[str, Any]:
        return {
            "parameters": [
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": _PARAMETER_DOCS[name],
                    "schema": {"type": "string"},
                }
                for name in names
            ]
        }

    def body(self, *, array: bool = False, where: bool = False) -> dict[str, Any]:
        schema: dict[str, Any] = self._ref
        if array:
            schema = {"oneOf": [self._ref, {"type": "array", "items": self._ref}]}
        extra: dict[str, Any] = {"requestBody": {"required": True, **self._json(schema)}}
        if where:
            extra.update(self.params("where"))
        return extra

    def reply(self, *, array: bool = False, array_or_one: bool = False) -> dict[int | str, Any]:
        schema: dict[str, Any] = self._ref
        if array:
            schema = {"type": "array", "items": self._ref}
        elif array_or_one:
            schema = {"oneOf": [self._ref, {"type": "array", "items": self._ref}]}
        return {200: {"description": "Success", **self._json(schema)}}

    def count(self) -> dict[int | str, Any]:
        schema = {"type": "object", "properties": {"count": {"type": "integer"}}}
        return {200: {"description": "Success", **self._json(schema)}}

    def exists(self) -> dict[int | str, Any]:
        schema = {"type": "object", "properties": {"exists": {"type": "boolean"}}}
        return {200: {"description": "Success", **self._json(schema)}}
