"""The `async with` of a change stream, local or remote: open on entry (closing again if opening fails),
close on exit."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class OpensAndCloses:
    """A stream that is opened with `open()` and closed with `aclose()`, usable as `async with stream:`."""

    async def open(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
