"""A whole LB3 model directory loaded as LoopBack boots it: model-config, bases, embedded models, relations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.models.definition import PropertyType, Registry, StrictMode
from gateway.models.loader import ModelDefinitionError, load_registry
from gateway.security.scope import check_owner_property


def write_app(root: Path, models: list[dict[str, Any]], config: dict[str, Any] | None = None) -> Path:
    """An LB3 layout: `common/models/*.json` and, if given, `server/model-config.json`."""
    directory = root / "common" / "models"
    directory.mkdir(parents=True)
    for model in models:
        (directory / f"{model['name'].lower()}.json").write_text(json.dumps(model))
    if config is not None:
        (root / "server").mkdir()
        (root / "server" / "model-config.json").write_text(json.dumps(config))
    return directory


def names(registry: Registry) -> list[str]:
    return [m.name for m in registry.models]


def test_model_config_beside_the_directory_decides_what_is_served(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [{"name": "Shown"}, {"name": "Internal"}, {"name": "Unlisted"}],
        {
            "_meta": {"sources": ["../common/models"]},
            "User": {"dataSource": "db"},
            "Shown": {"dataSource": "db", "public": True},
            "Internal": {"dataSource": "db", "public": False},
            "Missing": {"dataSource": "db"},
        },
    )
    registry = load_registry(directory)
    assert names(registry) == ["Shown"]
    assert any("model Missing is listed but not in the models directory" in w for w in registry.warnings)


def test_a_model_config_given_by_path_wins_and_without_one_every_model_is_served(tmp_path: Path) -> None:
    directory = write_app(tmp_path, [{"name": "A"}, {"name": "B"}])
    assert names(load_registry(directory)) == ["A", "B"]
    config = tmp_path / "elsewhere.json"
    config.write_text(json.dumps({"B": {"dataSource": None}}))
    assert names(load_registry(directory, config)) == ["B"]


def test_base_chains_merge_as_loopback_extends(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [
            {
                "name": "Animal",
                "plural": "Animalia",
                "strict": True,
                "hidden": ["secret"],
                "properties": {"name": {"type": "string", "required": True}, "secret": "string"},
                "acls": [{"accessType": "*", "principalType": "ROLE", "principalId": "$everyone"}],
                "relations": {"keeper": {"type": "belongsTo", "model": "Keeper"}},
            },
            {
                "name": "Dog",
                "base": "Animal",
                "hidden": ["chip"],
                "properties": {"breed": "string", "chip": "string", "name": {"type": "string"}},
                "acls": [{"accessType": "WRITE", "permission": "DENY"}],
            },
            {"name": "Keeper", "properties": {"code": {"type": "string", "id": True}}},
        ],
    )
    dog = load_registry(directory).by_name["Dog"]
    assert [p.name for p in dog.properties] == ["breed", "chip", "name", "secret", "id", "keeperId"]
    assert not dog.by_name["name"].required  # the model's own property replaces the base's whole
    assert dog.by_name["secret"].hidden
    assert dog.by_name["chip"].hidden
    assert [a.permission for a in dog.acls] == ["ALLOW", "DENY"]
    assert dog.strict is StrictMode.REJECT
    assert dog.plural == "Dogs"  # the base's plural is not inherited
    assert dog.by_name["keeperId"].type is PropertyType.STRING  # the inherited relation, typed as Keeper's id


def test_base_model_models_are_embedded_types_not_routes(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [
            {
                "name": "Address",
                "base": "Model",
                "properties": {"street": {"type": "string", "required": True}, "zip": "number"},
            },
            {
                "name": "Customer",
                "properties": {"home": "Address", "others": ["Address"]},
                "relations": {"billing": {"type": "embedsOne", "model": "Address", "property": "bill"}},
            },
        ],
    )
    registry = load_registry(directory)
    assert names(registry) == ["Customer"]
    customer = registry.by_name["Customer"]
    home, others, bill = customer.by_name["home"], customer.by_name["others"], customer.by_name["bill"]
    assert (home.type, home.embedded and home.embedded.name) == (PropertyType.OBJECT, "Address")
    assert (others.type, others.item_type) == (PropertyType.ARRAY, PropertyType.OBJECT)
    assert others.embedded is not None
    assert others.embedded.name == "Address"
    assert bill.embedded is not None
    assert [p.name for p in bill.embedded.properties] == ["street", "zip"]


def test_built_in_bases_are_skipped_with_one_warning_and_their_keys_kept(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [
            {"name": "Account", "base": "User", "properties": {"nick": "string"}},
            {"name": "Token", "base": "AccessToken"},
            {
                "name": "Note",
                "properties": {"text": "string"},
                "relations": {
                    "author": {"type": "belongsTo", "model": "Account"},
                    "editor": {"type": "belongsTo", "model": "User", "foreignKey": "editedBy"},
                },
                "acls": [{"accessType": "WRITE", "principalType": "ROLE", "principalId": "$owner"}],
            },
        ],
    )
    registry = load_registry(directory)
    assert names(registry) == ["Note"]
    skipped = [w for w in registry.warnings if "is not served: it is based on LoopBack's built-in" in w]
    assert len(skipped) == 2
    assert "Account" in skipped[0]
    assert "User" in skipped[0]
    assert "Token" in skipped[1]
    note = registry.by_name["Note"]
    assert [p.name for p in note.properties] == ["text", "id", "authorId", "editedBy"]
    assert note.by_name["authorId"].type is PropertyType.NUMBER
    assert note.owner_property == "authorId"  # $owner follows the belongsTo to a User model
    check_owner_property(note)


def test_a_relation_to_a_skipped_model_listed_in_model_config_has_no_routes(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [
            {"name": "user", "base": "User"},
            {"name": "project", "relations": {"owner": {"type": "belongsTo", "model": "user"}}},
        ],
        {"user": {"dataSource": "db"}, "project": {"dataSource": "db"}},
    )
    project = load_registry(directory).by_name["project"]
    assert project.relations == ()
    assert project.by_name["ownerId"].type is PropertyType.NUMBER


def test_owner_keys_loopback_reads_first(tmp_path: Path) -> None:
    acls = [{"accessType": "READ", "principalType": "ROLE", "principalId": "$owner"}]
    directory = write_app(
        tmp_path,
        [
            {"name": "A", "properties": {"userId": "number"}, "acls": acls},
            {"name": "B", "properties": {"ownerId": "string", "userId": "number"}, "acls": acls},
            {
                "name": "C",
                "properties": {"mine": "string"},
                "acls": acls,
                "options": {"ownerProperty": "mine"},
            },
        ],
    )
    registry = load_registry(directory)
    assert [m.owner_property for m in registry.models] == ["userId", "ownerId", "mine"]


def test_foreign_keys_as_juggler_defines_them(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [
            {
                "name": "Author",
                "properties": {"code": {"type": "string", "id": True}},
                "relations": {
                    "books": {"type": "hasMany", "model": "Book"},
                    "fans": {"type": "hasMany", "model": "Reader", "through": "Fandom"},
                    "tags": {"type": "referencesMany", "model": "Tag"},
                },
            },
            {"name": "Book", "properties": {"authorCode": "number"}},
            {"name": "Reader"},
            {"name": "Fandom"},
            {"name": "Tag"},
            {
                "name": "Review",
                "properties": {"bookId": {"type": "string", "required": True}},
                "relations": {"book": {"type": "belongsTo", "model": "Book"}},
            },
        ],
    )
    registry = load_registry(directory)
    book, fandom, author = (registry.by_name[n] for n in ("Book", "Fandom", "Author"))
    assert book.by_name["authorId"].type is PropertyType.STRING  # hasMany: on the target, the source's id
    assert (fandom.by_name["authorId"].type, fandom.by_name["readerId"].type) == (
        PropertyType.STRING,
        PropertyType.NUMBER,
    )
    assert author.by_name["tagIds"].item_type is PropertyType.NUMBER
    assert author.by_name["tagIds"].default == []
    review_key = registry.by_name["Review"].by_name["bookId"]
    assert (review_key.type, review_key.required) == (PropertyType.NUMBER, True)  # retyped, otherwise kept


def test_ids_as_loopback_assigns_them(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [
            {"name": "Legacy", "properties": {"id": "string", "title": "string"}},
            {"name": "Offline", "properties": {"id": {"type": "string", "id": True, "defaultFn": "uuid"}}},
            {"name": "Counted", "properties": {"id": {"type": "number", "id": True, "generated": True}}},
        ],
    )
    registry = load_registry(directory)
    legacy = registry.by_name["Legacy"]
    assert [p.name for p in legacy.properties] == ["id", "title"]  # injected in the declared one's place
    assert legacy.id_property.type is PropertyType.NUMBER
    assert legacy.id_property.generated
    assert legacy.force_id
    assert not registry.by_name["Offline"].force_id  # forceId "auto" follows `generated`, not defaultFn
    assert registry.by_name["Counted"].force_id


def test_keys_that_change_the_api_warn_once_per_model(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [
            {
                "name": "Busy",
                "trackChanges": True,
                "methods": {"greet": {"http": {"verb": "get"}}},
                "http": {"path": "busy-things"},
                "mixins": {"TimeStamp": True},
                "scope": {"where": {"archived": False}},
                "relations": {
                    "other": {"type": "hasAndBelongsToMany", "model": "Quiet"},
                    "quietOnes": {"type": "hasMany", "model": "Quiet"},
                },
            },
            {"name": "Quiet"},
        ],
    )
    warnings = [w for w in load_registry(directory).warnings if "model Busy: not served" in w]
    assert len(warnings) == 1
    for part in (
        "change-tracking routes",
        "custom remote methods",
        "http.path 'busy-things'",
        "relations other ",
        "mixins",
        "default `scope`",
    ):
        assert part in warnings[0]
    assert "quietOnes" not in warnings[0]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [
            {"name": "A", "base": "B"},
            {"name": "B", "base": "A"},
            {"name": "C", "base": "Nope"},
            {
                "name": "D",
                "properties": {"x": {"type": "boolean", "default": "yes"}, "y": {"type": ["a", "b"]}},
            },
            {"name": "E", "properties": {"at": {"type": "date", "default": "$now"}}},
        ],
    )
    with pytest.raises(ModelDefinitionError) as info:
        load_registry(directory)
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert "base chain loops" in problems[0]
    assert "base 'Nope' is neither" in problems[1]
    assert 'property x: default "yes" is not a valid boolean' in problems[2]
    assert "property y: an array type lists one item type" in problems[3]


def test_model_config_sources_add_the_server_models_directory(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [{"name": "Shared"}],
        {
            "_meta": {"sources": ["loopback/common/models", "../common/models", "./models"]},
            "Shared": {},
            "Local": {},
        },
    )
    (tmp_path / "server" / "models").mkdir()
    (tmp_path / "server" / "models" / "local.json").write_text(json.dumps({"name": "Local"}))
    assert names(load_registry(directory)) == ["Shared", "Local"]


def test_defaults_juggler_can_store_are_converted_and_the_rest_warned_or_refused(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [
            {
                "name": "Lenient",
                "properties": {
                    "blank": {"type": "number", "default": ""},
                    "flag": {"type": "number", "default": False},
                    "text": {"type": "number", "default": "7"},
                    "spot": {"type": "geopoint", "default": "0.1"},
                    "code": {"type": "string", "defaultFn": ""},
                },
            }
        ],
    )
    registry = load_registry(directory)
    lenient = registry.by_name["Lenient"]
    assert [lenient.by_name[n].default for n in ("blank", "flag", "text")] == [0.0, 0.0, "7"]
    assert not lenient.by_name["spot"].has_default
    assert lenient.by_name["code"].default_fn is None
    assert any('spot: default "0.1" is not a GeoPoint' in w for w in registry.warnings)
    assert any("code: defaultFn '' is not a LoopBack default function" in w for w in registry.warnings)


def test_an_app_of_remote_method_models_only_starts_serving_nothing(tmp_path: Path) -> None:
    directory = write_app(
        tmp_path,
        [{"name": "Greeter", "base": "Model", "methods": {"hello": {}}}, {"name": "Member", "base": "User"}],
        {"Greeter": {"dataSource": None, "public": True}, "Member": {"dataSource": "db"}},
    )
    registry = load_registry(directory)
    assert registry.models == ()
    assert any("model Greeter is not served: its base is Model" in w for w in registry.warnings)
    assert registry.warnings[-1].startswith("no models are served")
