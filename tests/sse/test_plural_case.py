"""Change streams answer on the plural in any case, as LoopBack's live-set example relies on."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from gateway.config import Settings
from tests.sse.helpers import open_stream, serve


async def test_a_lower_case_change_stream_path_streams_the_model(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "color.json").write_text(json.dumps({"name": "Color", "properties": {"name": "string"}}))
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", models=models, drain_seconds=0.1
    )
    async with serve(settings) as (url, _app), httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with open_stream(client, "/api/colors/change-stream?_format=event-source") as stream:
            assert stream.response.status_code == 200
            await stream.read_until(lambda s: s.parser.last_event_id != "")
            created = (await client.post("/api/colors", json={"name": "red"})).json()
            await stream.read_until(lambda s: len(s.data_events) >= 1)
        assert stream.changes() == [{"target": created["id"], "data": created, "type": "create"}]
