"""Limits on what one REST request may make a worker hold: rows per page, rows per array create, body depth.

Without them one request could take a worker out of rotation (40,000 rows listed by 20 clients took a worker
from 203 to 442 MB and failed its readiness). Each is a 400 in LoopBack's envelope naming the limit, never a
silently shortened reply: a list that was cut without a word would break list-then-watch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.filters import Filter
from gateway.jsonshape import BODY_MAX_DEPTH, ShapeError, check_shape
from gateway.rest.errors import LoopBackError


@dataclass(frozen=True, slots=True)
class RestLimits:
    """`max_page_size` rows per find (0: none, as LoopBack 3); `max_create_rows` rows per array create."""

    max_page_size: int = 0
    max_create_rows: int = 0

    def page(self, flt: Filter) -> Filter:
        """The filter to run: a `limit` above the page size is refused; without a `limit`, one row more than
        the page size is asked for, so that `check_page` can tell a full page from too many rows."""
        cap = self.max_page_size
        if not cap or (flt.limit is not None and flt.limit <= cap):
            return flt
        if flt.limit is not None:
            raise LoopBackError(400, f"The limit parameter {flt.limit} is above the maximum page size {cap}")
        return Filter(flt.where, flt.order, cap + 1, flt.skip, flt.fields)

    def beyond_page(self, flt: Filter) -> Filter | None:
        """For a find without a `limit`, the filter of the first row past the page: if it exists, the list
        is refused before any row of it is read (`too_large`); None when there is nothing to probe."""
        if not self.max_page_size or flt.limit is not None:
            return None
        return Filter(flt.where, flt.order, 1, flt.skip + self.max_page_size, None)

    def too_large(self) -> LoopBackError:
        return LoopBackError(
            400,
            f"More than {self.max_page_size} rows match; ask for pages with limit and skip",
            code="PAGE_TOO_LARGE",
        )

    def check_page(self, rows: list[Any]) -> None:
        """The page read after `beyond_page` found nothing past it: rows written in between may still
        make it too long, which is refused too (never a list silently cut)."""
        if self.max_page_size and len(rows) > self.max_page_size:
            raise self.too_large()

    def check_create(self, rows: list[Any]) -> None:
        if self.max_create_rows and len(rows) > self.max_create_rows:
            raise LoopBackError(
                400,
                f"At most {self.max_create_rows} rows may be created in one request, not {len(rows)}",
                code="TOO_MANY_ROWS",
            )


def check_body_shape(body: Any) -> None:
    """400 for a body nested deeper than `BODY_MAX_DEPTH` (it could be neither validated nor stored)."""
    try:
        check_shape(body, what="request body", max_depth=BODY_MAX_DEPTH)
    except ShapeError as exc:
        raise LoopBackError(400, str(exc)) from None
