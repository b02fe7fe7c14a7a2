"""`regexp` filters run by RE2: matching time linear in the text, whatever the pattern.

A change stream's filter runs on every event, and on SQLite a REST filter runs in the database's one worker
thread; with a backtracking engine (Python's `re`) one pattern such as `(a+)+$` could stall a whole worker.
RE2 has no backreferences or lookaround, so a pattern using them is refused with a 400 rather than run.
PostgreSQL evaluates REST `regexp` filters with its own engine, after the same check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import re2


def _options(*, ignore_case: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a client's bad pattern is a 400, not a line on the server's stderr
    options.case_sensitive = not ignore_case
    return options


_OPTIONS = {False: _options(ignore_case=False), True: _options(ignore_case=True)}


class RegexpError(ValueError):
    """The pattern is not one RE2 can run."""


@functools.lru_cache(maxsize=256)
def compile_search(pattern: str, *, ignore_case: bool) -> Callable[[str], bool]:
    """Whether a text contains a match of `pattern`; raises RegexpError for a pattern RE2 refuses. Cached:
    SQLite calls `sqlite_regexp` once per row."""
    try:
        compiled = re2.compile(pattern, _OPTIONS[ignore_case])
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RegexpError(reason) from None
    search = compiled.search
    return lambda text: search(text) is not None


def sqlite_regexp(pattern: str | None, text: str | None) -> bool | None:
    """SQLite's `REGEXP` function (`text REGEXP pattern` calls it as `regexp(pattern, text)`); patterns
    arrive already checked by the filter parser."""
    if pattern is None or text is None:
        return None
    return compile_search(pattern, ignore_case=False)(text)
