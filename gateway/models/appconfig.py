"""An LB3 app's `server/model-config.json`: which models the app serves, and which of them are public.

LoopBack boots only the models this file lists, and exposes over REST only those not marked
`"public": false`. `dataSource` is ignored (the gateway has one database), as are `_meta` entries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MODEL_CONFIG = "model-config.json"


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """What model-config.json says: every listed model, and whether it is public."""

    source: str
    public: Mapping[str, bool]
    sources: tuple[Path, ...] = ()
    """The app's own model directories from `_meta.sources` (LoopBack's built-in `loopback/...` ones left
    out), resolved against the file's directory, that exist."""


def find_model_config(models: Path) -> Path | None:
    """The model-config.json of LB3's layout around a models directory, if there is one.

    `server/models/` has it beside (`server/model-config.json`); `common/models/` has it in the
    sibling `server/` directory.
    """
    if not models.is_dir():
        return None
    for candidate in (models.parent / MODEL_CONFIG, models.parent.parent / "server" / MODEL_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def read_model_config(path: Path) -> ModelConfig:
    """Parse `path`; raises ValueError with a message that names the file and the entry."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file: {exc}") from None
    if not isinstance(document, Mapping):
        raise ValueError(f"{path}: expected an object mapping model names to their configuration")
    public: dict[str, bool] = {}
    meta = document.get("_meta")
    listed = meta.get("sources") if isinstance(meta, Mapping) else None
    sources = tuple(
        (path.parent / source).resolve()
        for source in (listed if isinstance(listed, list) else ())
        if isinstance(source, str) and not source.startswith("loopback/") and (path.parent / source).is_dir()
    )
    for name, entry in document.items():
        if name.startswith("_"):
            continue
        if not isinstance(entry, Mapping):
            raise ValueError(f"{path}: the entry of model {name} must be an object")
        flag = entry.get("public", True)
        if not isinstance(flag, bool):
            raise ValueError(f"{path}: model {name}: `public` must be true or false")
        public[name] = flag
    return ModelConfig(str(path), public, sources)
