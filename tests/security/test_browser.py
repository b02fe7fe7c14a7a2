"""Headless Chromium's own `EventSource`, authenticated by the session cookie and by a stream ticket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from playwright.async_api import Browser

from gateway.config import Settings
from tests.security.conftest import bearer, make_token
from tests.sse.helpers import serve

PAGE = """<!doctype html><title>notes</title><script>
window.cookieStream = [];
window.ticketStream = [];
let opened = 0;
const follow = (url, into) => {
  const source = new EventSource(url);
  source.onopen = () => { opened += 1; };
  source.addEventListener('data', (e) => into.push(JSON.parse(e.data)));
};
window.ready = (async () => {
  const auth = {Authorization: 'Bearer TOKEN'};
  await fetch('/auth/session', {method: 'POST', headers: auth});
  window.cookieVisible = document.cookie;
  follow('/api/Notes/change-stream', window.cookieStream);
  const reply = await fetch('/auth/stream-ticket', {
    method: 'POST', headers: {...auth, 'Content-Type': 'application/json'}, body: '{"model": "Note"}'});
  const {ticket} = await reply.json();
  follow('/api/Notes/change-stream?ticket=' + ticket, window.ticketStream);
  while (opened < 2) await new Promise((resolve) => setTimeout(resolve, 20));
  return true;
})();
</script>"""


async def test_eventsource_with_cookie_and_ticket_sees_only_its_rows(
    browser: Browser, secured_settings: Callable[..., Settings]
) -> None:
    alice = make_token("alice")
    settings = secured_settings(auth_cookie_secure=False)
    async with serve(settings, page=PAGE.replace("TOKEN", alice)) as (url, app):
        page = await browser.new_page()
        await page.goto(f"{url}/page")
        async with asyncio.timeout(20):
            assert await page.evaluate("window.ready")
        assert await page.evaluate("window.cookieVisible") == ""  # HttpOnly: no script can read the token
        async with httpx.AsyncClient(base_url=url) as http:
            for title, token in (("theirs", make_token("bob")), ("mine", alice)):
                reply = await http.post("/api/Notes", json={"title": title}, headers=bearer(token))
                assert reply.status_code == 200

        async def titles(name: str) -> list[Any]:
            changes: list[dict[str, Any]] = await page.evaluate(f"window.{name}")
            return [change["data"]["title"] for change in changes]

        async with asyncio.timeout(20):
            while len(await titles("cookieStream")) < 1 or len(await titles("ticketStream")) < 1:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert await titles("cookieStream") == ["mine"]
        assert await titles("ticketStream") == ["mine"]
        assert app.gateway.hub.count == 2
        await page.close()
