"""LoopBack model JSON → ModelDef: LoopBack's defaults, and errors that say where the problem is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.models.definition import MISSING, PropertyType, StrictMode
from gateway.models.loader import ModelDefinitionError, load_registry, parse_model
from tests.conftest import EXAMPLE_MODELS


def test_the_example_todo() -> None:
    registry = load_registry(EXAMPLE_MODELS)
    todo = registry.by_plural["Todos"]
    assert todo.name == "Todo"
    assert [p.name for p in todo.properties] == ["title", "done", "priority", "id"]  # injected id comes last
    assert todo.by_name["title"].required
    assert todo.by_name["done"].default is False
    assert todo.by_name["priority"].default is MISSING
    assert todo.id_property.generated
    assert todo.force_id
    assert todo.strict is StrictMode.KEEP
    assert todo.table_name == "todo"


@pytest.mark.parametrize(
    ("name", "plural"),
    [("Todo", "Todos"), ("Category", "Categories"), ("Person", "People"), ("Box", "Boxes")],
)
def test_plural_follows_loopback(name: str, plural: str) -> None:
    assert parse_model("m.json", {"name": name, "properties": {}}).plural == plural


def test_lb3_property_forms() -> None:
    model = parse_model(
        "m.json",
        {
            "name": "Note",
            "plural": "notes",
            "strict": True,
            "forceId": False,
            "hidden": ["secret"],
            "properties": {
                "code": {"type": "string", "id": True},
                "body": "String",
                "tags": ["string"],
                "meta": {"type": "object"},
                "when": {"type": "date", "defaultFn": "now"},
                "anything": {"type": "any", "index": True},
                "secret": "string",
            },
            "relations": {"owner": {"type": "belongsTo", "model": "User"}},
            "acls": [
                {
                    "accessType": "WRITE",
                    "principalType": "ROLE",
                    "principalId": "$owner",
                    "permission": "ALLOW",
                }
            ],
        },
    )
    assert model.plural == "notes"
    assert model.id_name == "code"
    assert model.id_property.type is PropertyType.STRING
    assert not model.id_property.generated
    assert not model.force_id
    assert model.strict is StrictMode.REJECT
    assert model.by_name["body"].type is PropertyType.STRING
    assert (model.by_name["tags"].type, model.by_name["tags"].item_type) == (
        PropertyType.ARRAY,
        PropertyType.STRING,
    )
    assert model.by_name["when"].default_fn == "now"
    assert model.by_name["anything"].index
    assert model.by_name["secret"].hidden
    assert model.acls[0].principal_id == "$owner"


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"name": "A", "base": "User"}, "base 'User' is not supported"),
        (
            {"name": "A", "properties": {"x": {"type": "number", "default": "high"}}},
            'property x: default "high" is not a valid number',
        ),
        (
            {"name": "A", "properties": {"x": {"type": "date", "default": "soon"}}},
            'property x: default "soon" is not a valid date',
        ),
        ({"name": "A", "properties": {"x": {"type": ["string", "number"]}}}, "one item type"),
        ({"name": "A", "idInjection": False, "properties": {"x": "string"}}, "no property has `id: true`"),
        ({"name": "A", "strict": "sometimes"}, "`strict` must be"),
        ({"name": "not a name"}, "`name` must be an identifier"),
        ({"name": "A", "properties": {"x": {"type": "number", "defaultFn": "now"}}}, "defaultFn 'now'"),
        ({"name": "A", "acls": [{"permission": "MAYBE"}]}, "acl permission 'MAYBE'"),
    ],
)
def test_unservable_definitions_are_errors_that_name_the_place(
    definition: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelDefinitionError, match=message.replace("(", r"\(")) as info:
        parse_model("common/models/a.json", definition)
    assert str(info.value).startswith("common/models/a.json")


def test_one_yaml_file_lists_models(tmp_path: Path) -> None:
    listing = tmp_path / "models.yaml"
    listing.write_text(
        "models:\n  Todo:\n    properties:\n      title: string\n  Tag:\n    properties:\n      name: string\n"
    )
    assert [m.name for m in load_registry(listing).models] == ["Todo", "Tag"]


def test_a_directory_ignores_non_json_files_and_rejects_duplicates(tmp_path: Path) -> None:
    (tmp_path / "todo.js").write_text("module.exports = function(Todo) {};")
    (tmp_path / "a.json").write_text(json.dumps({"name": "Todo"}))
    assert [m.name for m in load_registry(tmp_path).models] == ["Todo"]
    (tmp_path / "b.json").write_text(json.dumps({"name": "Todo", "plural": "Others"}))
    with pytest.raises(ModelDefinitionError, match="defined twice"):
        load_registry(tmp_path)


def test_missing_or_empty_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelDefinitionError, match="no such file"):
        load_registry(tmp_path / "nope")
    with pytest.raises(ModelDefinitionError, match="no model JSON files"):
        load_registry(tmp_path)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ModelDefinitionError, match="not valid JSON"):
        load_registry(tmp_path)
