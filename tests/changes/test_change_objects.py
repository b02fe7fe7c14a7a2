"""DESIGN §4.3: the change objects each REST write publishes, read back from the broker's stream.

Every write goes over HTTP to an in-process gateway (memory broker) on SQLite and on PostgreSQL. The expected
objects are built from what the API itself replies (the full row), so the test checks the pipeline, not a
second copy of the row format. Entries are compared byte for byte, which pins the key order
`target, where, data, type` and the omission of absent keys.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from tests.changes.conftest import InProcess, InProcessFactory, before_of, change_of, ok

KEYS = {
    "create": ["target", "data", "type"],
    "update": ["target", "data", "type"],
    "updateAll": ["target", "where", "data", "type"],
    "remove": ["target", "where", "type"],
}


def q(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Expected:
    """The change objects (and `before` rows) the writes so far must have published, in commit order."""

    def __init__(self, gateway: InProcess) -> None:
        self.client = gateway.client
        self.changes: list[tuple[dict[str, Any], dict[str, Any] | None]] = []

    async def row(self, id_value: int) -> dict[str, Any]:
        row: dict[str, Any] = ok(await self.client.get(f"/api/Todos/{id_value}"))
        return row

    def created(self, row: dict[str, Any]) -> None:
        self.changes.append(({"target": row["id"], "data": row, "type": "create"}, None))

    def updated(self, row: dict[str, Any], before: dict[str, Any]) -> None:
        self.changes.append(({"target": row["id"], "data": row, "type": "update"}, before))

    def updated_by_where(self, row: dict[str, Any], before: dict[str, Any]) -> None:
        change = {"target": row["id"], "where": {"id": row["id"]}, "data": row, "type": "update"}
        self.changes.append((change, before))

    def removed(self, before: dict[str, Any]) -> None:
        change = {"target": before["id"], "where": {"id": before["id"]}, "type": "remove"}
        self.changes.append((change, before))


async def test_every_write_publishes_exactly_its_change_objects(in_process: InProcessFactory) -> None:
    async with in_process() as gateway:
        client = gateway.client
        expect = Expected(gateway)

        # create: one object, then an array (one change per row, in the array's order)
        a = ok(await client.post("/api/Todos", json={"title": "a"}))
        assert a == {"title": "a", "done": False, "id": 1}
        expect.created(a)
        rows = ok(await client.post("/api/Todos", json=[{"title": "b"}, {"title": "c", "priority": 2}]))
        for row in rows:
            expect.created(row)
        b, c = rows

        # patchAttributes and replaceById (both routes): the full row after, not the patch
        before = await expect.row(a["id"])
        expect.updated(ok(await client.patch(f"/api/Todos/{a['id']}", json={"done": True})), before)
        before = await expect.row(c["id"])
        replaced = ok(await client.put(f"/api/Todos/{c['id']}", json={"title": "c2"}))
        assert "priority" not in replaced
        expect.updated(replaced, before)
        before = replaced
        expect.updated(ok(await client.post(f"/api/Todos/{c['id']}/replace", json={"title": "c3"})), before)

        # patchOrCreate: update of an existing row, create without an id (Todo has forceId: a new id
        # is a 404, tested among the phantoms)
        before = await expect.row(b["id"])
        expect.updated(ok(await client.patch("/api/Todos", json={"id": b["id"], "priority": 7})), before)
        d = ok(await client.patch("/api/Todos", json={"title": "d"}))
        expect.created(d)

        # replaceOrCreate (PUT and POST /replaceOrCreate): update of an existing row, and a create
        before = await expect.row(b["id"])
        expect.updated(ok(await client.put("/api/Todos", json={"id": b["id"], "title": "b2"})), before)
        before = await expect.row(d["id"])
        expect.updated(
            ok(await client.post("/api/Todos/replaceOrCreate", json={"id": d["id"], "title": "d2"})), before
        )
        expect.created(ok(await client.post("/api/Todos/replaceOrCreate", json={"title": "f"})))

        # upsertWithWhere, both branches
        before = await expect.row(b["id"])
        upserted = ok(
            await client.post("/api/Todos/upsertWithWhere?where=" + q({"title": "b2"}), json={"priority": 5})
        )
        assert upserted["id"] == b["id"]
        expect.updated(upserted, before)
        expect.created(
            ok(
                await client.post(
                    "/api/Todos/upsertWithWhere?where=" + q({"title": "g"}), json={"title": "g"}
                )
            )
        )

        # updateAll: one update per matched row (with where {id}), the full row after; none for no match
        matched = ok(await client.get("/api/Todos?filter=" + q({"where": {"done": False}, "order": "id"})))
        assert len(matched) >= 3
        count = ok(await client.post("/api/Todos/update?where=" + q({"done": False}), json={"priority": 9}))
        assert count == {"count": len(matched)}
        for before in matched:
            expect.updated_by_where(await expect.row(before["id"]), before)
        assert ok(
            await client.post("/api/Todos/update?where=" + q({"title": "none"}), json={"done": True})
        ) == {"count": 0}

        # deleteById: a remove with the row before; nothing for a missing id or a second delete
        before = await expect.row(b["id"])
        assert ok(await client.delete(f"/api/Todos/{b['id']}")) == {"count": 1}
        expect.removed(before)
        assert ok(await client.delete(f"/api/Todos/{b['id']}")) == {"count": 0}
        assert ok(await client.delete("/api/Todos/999")) == {"count": 0}

        # a last create marks the end: once it is in the stream, everything before it is too
        expect.created(ok(await client.post("/api/Todos", json={"title": "last"})))
        entries = await gateway.published(len(expect.changes))

        assert [change_of(entry) for entry in entries] == [change for change, _ in expect.changes]
        for entry, (change, row_before) in zip(entries, expect.changes, strict=True):
            assert entry.change == orjson.dumps(change)  # byte for byte: key order, no absent keys
            kind = "updateAll" if change["type"] == "update" and "where" in change else change["type"]
            assert list(change_of(entry)) == KEYS[kind]
            assert before_of(entry) == row_before
        outbox_ids = [entry.outbox_id for entry in entries]
        assert outbox_ids == sorted(set(outbox_ids))
        assert await gateway.outbox_count() == len(expect.changes)
        await gateway.all_marked()
