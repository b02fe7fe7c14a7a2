"""Settings: environment variables with the prefix `GATEWAY_` (and a `.env` file).

There is no module-level instance. `Settings()` is built once by the CLI (or a test) and handed to
`create_app(settings)`; everything downstream receives what it needs from it. Every setting has a default
that works for `make run`; a wrong value fails at start with a message that names the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "GATEWAY_"
BROKER_SCHEMES = ("memory", "redis", "rediss", "redis+sentinel", "redis+cluster")
DATABASE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")


class SettingsError(ValueError):
    """A setting has a wrong value; the message names the environment variable."""


class Settings(BaseSettings):
    """Everything a gateway process can be told. See the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./gateway.db"
    broker_url: str = "memory://"
    models: Path = Path("examples/models")
    rest_root: str = "/api"
    create_tables: bool = True
    redis_prefix: str = "gw"

    stream_maxlen: int | None = Field(default=100_000, ge=100)
    stream_max_age: float | None = Field(default=None, gt=0)
    outbox_retention: float = Field(default=3600.0, ge=0)
    relay_batch: int = Field(default=500, ge=1, le=10_000)
    relay_poll_interval: float = Field(default=1.0, gt=0, le=60)
    lease_ttl: float = Field(default=5.0, ge=1, le=300)

    heartbeat: float = Field(default=15.0, gt=0)
    retry: int = Field(default=3000, ge=0)
    bookmark_interval: float = Field(default=5.0, gt=0)
    subscriber_max_events: int = Field(default=1000, ge=1)
    subscriber_max_bytes: int = Field(default=1_048_576, ge=1024)
    max_connections: int = Field(default=10_000, ge=1)
    drain_seconds: float = Field(default=10.0, ge=0)
    cors_origins: Annotated[list[str], NoDecode] = []

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in DATABASE_SCHEMES:
            raise ValueError(f"scheme {scheme!r} is not supported; use one of {', '.join(DATABASE_SCHEMES)}")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in BROKER_SCHEMES:
            raise ValueError(f"scheme {scheme!r} is not supported; use one of {', '.join(BROKER_SCHEMES)}")
        return value

    @field_validator("rest_root")
    @classmethod
    def _check_rest_root(cls, value: str) -> str:
        if not value.startswith("/") or (len(value) > 1 and value.endswith("/")):
            raise ValueError("must start with '/' and not end with '/', like /api")
        return value.rstrip("/") if value != "/" else ""

    @model_validator(mode="after")
    def _check_retention(self) -> Settings:
        if self.stream_maxlen is not None and self.stream_maxlen < 2 * self.relay_batch:
            raise ValueError(
                f"GATEWAY_STREAM_MAXLEN ({self.stream_maxlen}) must be at least twice "
                f"GATEWAY_RELAY_BATCH ({self.relay_batch})"
            )
        return self

    @property
    def uses_memory_broker(self) -> bool:
        return self.broker_url.startswith("memory:")


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, turning pydantic's error into one that names the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            name = f"{ENV_PREFIX}{field.upper()}" if error["loc"] else "settings"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
