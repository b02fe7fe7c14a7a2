"""The compatibility corpus: LB3 apps replayed against replies recorded once from LoopBack 3.28.

Each directory under `apps/` is an app as LB3 lays it out (`models/*.json`, `model-config.json`), the
requests a front end would send (`requests.json`), and what LoopBack 3 answered (`replies.json`, written by
`record.js`; no Node is needed here). Every reply must match, on SQLite and PostgreSQL, except the ones
listed in the app's `differences.json` (request index → reason, each documented in docs/models.md), and
those must still differ, so the list never outlives the difference.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from tests.rest.conftest import serve_in_process

APPS = Path(__file__).resolve().parent / "apps"
_MOMENT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def normalised(value: Any) -> Any:
    """The reply with what differs per run (`$now` dates after 2000, generated uuids) replaced by markers."""
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, str) and _MOMENT.match(value) and value >= "2000":
        return "<now>"
    if isinstance(value, str) and _UUID.match(value):
        return "<uuid>"
    return value


def load(app: Path, name: str, default: Any = None) -> Any:
    path = app / name
    return json.loads(path.read_text()) if path.exists() else default


@pytest.mark.parametrize("name", sorted(p.name for p in APPS.iterdir() if p.is_dir()))
async def test_the_app_replies_as_loopback_3(name: str, database_url: str) -> None:
    app = APPS / name
    requests, replies = load(app, "requests.json"), load(app, "replies.json")
    differences: dict[str, str] = load(app, "differences.json", {})
    assert len(requests) == len(replies)
    settings = Settings(
        database_url=database_url, models=app / "models", models_config=app / "model-config.json"
    )
    mismatches = []
    async with serve_in_process(settings) as (client, _gateway):
        for index, ((method, url, body), expected) in enumerate(zip(requests, replies, strict=True)):
            response = await client.request(method, url, json=body)
            got = {"status": response.status_code, "body": response.json() if response.content else None}
            same = normalised(got) == normalised(expected)
            if same == (str(index) in differences):
                mismatches.append((index, method, url, got, expected, differences.get(str(index))))
    assert not mismatches, "\n".join(map(repr, mismatches))
