"""OpenAPI descriptions of the model routes, built from the model definitions.

The routes parse their own bodies (to answer in LoopBack's error format), so FastAPI cannot infer the
schemas; these helpers hand them over through `openapi_extra` and `responses`, and `model_schemas` fills
`components/schemas` with one schema per model.
"""

from __future__ import annotations

from typing import Any

from gateway.models.definition import ModelDef, PropertyDef, PropertyType, StrictMode
from gateway.models.rows import MAX_SAFE_INTEGER
from gateway.rest.filter_schema import NO_NUL, digits_at_most, filter_schemas, ref

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


def json_parameter(name: str, description: str, schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    """A query parameter whose value is JSON (OpenAPI's `content` form), as LoopBack's object arguments."""
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


JSON_VALUE_NAME = "JsonValue"
JSON_VALUE: dict[str, Any] = {
    "title": "Any JSON value without NUL characters",
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"$ref": f"#/components/schemas/{JSON_VALUE_NAME}"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": f"#/components/schemas/{JSON_VALUE_NAME}"},
        },
    ],
}
_ANY = {"$ref": f"#/components/schemas/{JSON_VALUE_NAME}"}


_FINITE = {"type": "number", "minimum": -1.7976931348623157e308, "maximum": 1.7976931348623157e308}
_NUMBER_TEXT = r"^\s*[+-]?(?:[0-9]{1,200}(?:\.[0-9]{0,200})?|\.[0-9]{1,200})(?:[eE][+-]?[0-9]{1,2})?\s*$"
"""A number as text, which juggler coerces (kept short enough that it cannot overflow a double)."""


def _coerced(schema: dict[str, Any], also: dict[str, Any], prop: PropertyDef) -> dict[str, Any]:
    """`schema`, or `also`, which a write coerces to it as juggler does (a number for a string, ...)."""
    alternatives = [schema, also]
    if not prop.required:  # null unsets a property
        alternatives.append({"type": "null"})
    return {"anyOf": alternatives}


def property_schema(prop: PropertyDef) -> dict[str, Any]:
    """What a write accepts for a property (`gateway.models.validation.coerce`)."""
    schema = dict(_JSON_TYPES[prop.type])
    if prop.type is PropertyType.NUMBER and prop.is_id:
        schema = {"type": "integer", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER}
        text = {"type": "string", "pattern": rf"^\s*[+-]?{digits_at_most(MAX_SAFE_INTEGER, 20)}\s*$"}
        return _coerced(schema, text, prop)
    if prop.type is PropertyType.NUMBER:
        return _coerced(_FINITE, {"type": "string", "pattern": _NUMBER_TEXT}, prop)
    if prop.type is PropertyType.BOOLEAN:
        return _coerced(schema, {"enum": ["true", "false"]}, prop)
    if prop.type is PropertyType.STRING:
        schema["pattern"] = NO_NUL
        if prop.required:
            schema["minLength"] = 1  # LoopBack's "can't be blank"
        return _coerced(schema, _FINITE, prop)
    if prop.type is PropertyType.DATE:
        return _coerced(schema, _FINITE, prop)
    if prop.type is PropertyType.OBJECT:
        schema.update({"propertyNames": {"pattern": NO_NUL}, "additionalProperties": _ANY})
    elif prop.type is PropertyType.ANY:
        schema = dict(_ANY)
    if prop.item_type is not None:
        schema["items"] = property_schema(PropertyDef(prop.name, prop.item_type))
    elif prop.type is PropertyType.ARRAY:
        schema["items"] = _ANY
    if "type" in schema and not prop.required:  # null unsets a property
        schema["type"] = [schema["type"], "null"]
    return schema


def _without_id(schema: dict[str, Any], model: ModelDef, *, required: bool) -> dict[str, Any]:
    """The body of a write to a given id: the id is the path's (another one is LoopBack's 400), and a
    patch (`required=False`) sets only what it names."""
    properties = {k: v for k, v in schema["properties"].items() if k != model.id_name}
    body = {
        **schema,
        "properties": properties,
        "propertyNames": {"pattern": NO_NUL, "not": {"const": model.id_name}},
    }
    if not required:
        body.pop("required", None)
    return body


def model_schemas(models: tuple[ModelDef, ...], max_page_size: int = 0) -> dict[str, Any]:
    """`components/schemas` entries: per model, the body it accepts (`<Name>`; `<Name>New` for a create
    when the id is forced, `<Name>Replace` and `<Name>Changes` for a replace or patch of a given id), the
    row it answers (`<Name>Row`: any property may be absent, as unset ones and `fields` projections are),
    and its filter language (`gateway.rest.filter_schema`)."""
    schemas: dict[str, Any] = {JSON_VALUE_NAME: JSON_VALUE, **filter_schemas(models, max_page_size)}
    for model in models:
        properties = {p.name: property_schema(p) for p in model.properties if not p.hidden}
        required = [p.name for p in model.properties if p.required and not p.is_id]
        schema: dict[str, Any] = {"type": "object", "title": model.name, "properties": properties}
        if required:
            schema["required"] = required
        if model.strict is StrictMode.REJECT:
            schema["additionalProperties"] = False
        elif model.strict is StrictMode.KEEP:
            schema.update({"propertyNames": {"pattern": NO_NUL}, "additionalProperties": _ANY})
        schemas[model.name] = schema
        if model.force_id:  # a create may not choose the id (LoopBack's forceId)
            schemas[f"{model.name}New"] = _without_id(schema, model, required=True)
        schemas[f"{model.name}Replace"] = _without_id(schema, model, required=True)
        schemas[f"{model.name}Changes"] = _without_id(schema, model, required=False)
        schemas[f"{model.name}Row"] = {
            "type": "object",
            "title": f"{model.name} row",
            "properties": properties,
        }
    return schemas


class RouteDocs:
    """`openapi_extra` / `responses` fragments for the routes of one model."""

    def __init__(self, model: ModelDef) -> None:
        self._name = model.name
        self._ref = ref(model.name)
        self._new = ref(f"{model.name}{'New' if model.force_id else ''}")
        self._row = ref(f"{model.name}Row")

    def _json(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": schema}}}

    def filter(self, variant: str = "") -> dict[str, Any]:
        """The `filter` parameter: `<Name>Filter`, or its `Page` (find) or `Id` (findById) variant."""
        schema = ref(f"{self._name}{variant}Filter")
        return {"parameters": [json_parameter("filter", _PARAMETER_DOCS["filter"], schema, required=False)]}

    def where(self, *, required: bool = False) -> dict[str, Any]:
        """The `where` parameter; where it is required it must name a condition (`{}` is a 400 there)."""
        schema = ref(f"{self._name}Where")
        if required:
            schema = {"allOf": [schema, {"minProperties": 1}]}
        return {"parameters": [json_parameter("where", _PARAMETER_DOCS["where"], schema, required=required)]}

    def body(self, variant: str = "", *, where: bool = False) -> dict[str, Any]:
        """The JSON body: `<Name>` (or `<Name><variant>`), required but for a patch of a given id; create
        (`variant="create"`) takes one object or an array of them."""
        if variant == "create":
            schema = {"oneOf": [self._new, {"type": "array", "items": self._new}]}
        else:
            schema = ref(f"{self._name}{variant}")
        # An absent body is `{}`, as in LoopBack, which only a patch (of an id, or of the rows a `where`
        # matches) accepts; elsewhere it fails the model's validation.
        required = variant != "Changes"
        extra: dict[str, Any] = {"requestBody": {"required": required, **self._json(schema)}}
        if where:  # upsertWithWhere and updateAll need it (`where={}` is every row for updateAll)
            extra.update(self.where(required=True))
        return extra

    def reply(self, *, array: bool = False, array_or_one: bool = False) -> dict[int | str, Any]:
        schema: dict[str, Any] = self._row
        if array:
            schema = {"type": "array", "items": self._row}
        elif array_or_one:
            schema = {"oneOf": [self._row, {"type": "array", "items": self._row}]}
        return {200: {"description": "Success", **self._json(schema)}}

    def count(self) -> dict[int | str, Any]:
        schema = {"type": "object", "properties": {"count": {"type": "integer"}}}
        return {200: {"description": "Success", **self._json(schema)}}

    def exists(self) -> dict[int | str, Any]:
        schema = {"type": "object", "properties": {"exists": {"type": "boolean"}}}
        return {200: {"description": "Success", **self._json(schema)}}


ERROR_SCHEMA_NAME = "LoopBackError"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "LoopBack error",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["statusCode", "message"],
            "properties": {
                "statusCode": {"type": "integer"},
                "name": {"type": "string"},
                "message": {"type": "string"},
                "code": {"type": "string"},
                "details": {},
            },
        }
    },
}
"""The envelope every error is sent in (`gateway.rest.errors`); a 422's `details` hold `codes`/`messages`."""

_ERROR_REASONS = {
    "400": "A malformed filter, where, options or body, or one past a documented limit",
    "401": "Authentication required, or the credentials are invalid",
    "403": "The model's ACLs deny this to the principal",
    "404": "No such instance (or, for /auth routes, authentication is not configured)",
    "405": "Method not allowed (the `Allow` header lists those that are)",
    "408": "The request's headers or body took longer than GATEWAY_HEADER_TIMEOUT or GATEWAY_BODY_TIMEOUT",
    "413": "The request body is larger than GATEWAY_LIMIT_BODY_BYTES",
    "422": "The body is not a valid instance (ValidationError with details.codes and details.messages)",
    "429": "A rate or stream limit was reached; see Retry-After",
    "431": "The request line and headers are larger than GATEWAY_MAX_HEADER_BYTES or GATEWAY_MAX_HEADERS",
    "503": "The broker or security store did not answer in time, or the worker is draining; see Retry-After",
}
_NOT_FOUND_ROUTES = ("/{id}", "/{id}/replace", "/findOne", "/stream-ticket", "/session")


def complete_error_responses(document: dict[str, Any], rest_root: str) -> None:
    """Add every error status the gateway can send to each operation of `document` (in place), in the
    LoopBack envelope, replacing FastAPI's `HTTPValidationError` 422, which the gateway never sends."""
    document.setdefault("components", {}).setdefault("schemas", {})[ERROR_SCHEMA_NAME] = ERROR_SCHEMA
    for schema_name in ("HTTPValidationError", "ValidationError"):
        document["components"]["schemas"].pop(schema_name, None)
    for path, operations in document.get("paths", {}).items():
        model_route = path.startswith((f"{rest_root}/", "/auth/"))
        if not model_route:
            continue
        for method, operation in operations.items():
            statuses = ["400", "401", "403", "408", "429", "431", "503"]  # 408, 431: gateway.ops.httpguard
            if method in ("post", "put", "patch"):
                statuses += ["404", "413", "422"]  # an upsert's id may be out of the principal's scope
            elif path.endswith(_NOT_FOUND_ROUTES) or "{id}" in path:
                statuses.append("404")
            responses = operation.setdefault("responses", {})
            for status, response in list(responses.items()):
                if "HTTPValidationError" in repr(response):
                    del responses[status]
            for status in statuses:
                responses[status] = {
                    "description": responses.get(status, {}).get("description", _ERROR_REASONS[status]),
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}
                    },
                }
