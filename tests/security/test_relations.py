"""ACLs on relations: `$owner` through a belongsTo key, and the included model's ACLs and scope in `include`."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.config import Settings
from tests.rest.conftest import serve_in_process
from tests.security.conftest import SECRET, bearer, make_token

MODELS = [
    {"name": "Account", "base": "User"},
    {
        "name": "Note",
        "properties": {"title": "string"},
        "relations": {
            "author": {"type": "belongsTo", "model": "Account"},
            "folder": {"type": "belongsTo", "model": "Folder"},
        },
        "acls": [
            {"accessType": "*", "principalType": "ROLE", "principalId": "$everyone", "permission": "DENY"},
            {"accessType": "*", "principalType": "ROLE", "principalId": "$owner", "permission": "ALLOW"},
            {
                "principalType": "ROLE",
                "principalId": "$authenticated",
                "permission": "ALLOW",
                "property": "create",
            },
        ],
    },
    {
        "name": "Folder",
        "properties": {"name": "string"},
        "relations": {"notes": {"type": "hasMany", "model": "Note"}},
        "acls": [
            {"accessType": "READ", "principalType": "ROLE", "principalId": "$everyone", "permission": "ALLOW"}
        ],
    },
]


async def test_owner_follows_a_belongs_to_user_and_include_applies_the_included_acls(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for model in MODELS:
        (models / f"{model['name'].lower()}.json").write_text(json.dumps(model))
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", models=models, auth_jwt_secret=SECRET
    )
    seven, eight = bearer(make_token("7")), bearer(make_token("8"))
    async with serve_in_process(settings) as (client, gateway):
        assert gateway.registry.by_name["Note"].owner_property == "authorId"
        assert (await client.post("/api/Folders", json={"name": "f"})).status_code == 200  # no rule denies it
        mine = await client.post(
            "/api/Notes", json={"title": "mine", "folderId": 1, "authorId": 8}, headers=seven
        )
        assert mine.status_code == 200, mine.text
        assert mine.json()["authorId"] == 7  # the owner key is forced to the principal
        assert (
            await client.post("/api/Notes", json={"title": "theirs", "folderId": 1}, headers=eight)
        ).status_code == 200
        include = {"filter": json.dumps({"include": "notes"})}
        as_seven = (await client.get("/api/Folders", params=include, headers=seven)).json()
        assert [n["title"] for n in as_seven[0]["notes"]] == ["mine"]  # Note's $owner scope applies
        assert (await client.get("/api/Folders", params=include)).status_code == 401  # Note's ACLs apply
        assert (await client.get("/api/Folders")).status_code == 200
        routed = (await client.get("/api/Folders/1/notes", headers=eight)).json()
        assert [n["title"] for n in routed] == ["theirs"]
