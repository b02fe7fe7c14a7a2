"""Settings: environment variables with the prefix `GATEWAY_` (and a `.env` file).

There is no module-level instance. `Settings()` is built once by the CLI (or a test) and handed to
`create_app(settings)`; everything downstream receives what it needs from it. Every setting has a default
that works for `make run`; a wrong value fails at start with a message that names the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
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
    models_config: Path | None = None  # an LB3 server/model-config.json; unset: looked for beside `models`
    rest_root: str = "/api"
    create_tables: bool = True
    redis_prefix: str = "gw"
    redis_max_connections: int = Field(default=64, ge=4, le=10_000)
    redis_pool_timeout: float = Field(default=5.0, gt=0, le=60)

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
    write_timeout: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=10_000, ge=1)
    header_timeout: float = Field(default=10.0, gt=0)  # `gateway serve`: seconds to send the headers
    body_timeout: float = Field(default=30.0, gt=0)  # `gateway serve`: seconds to send the body
    max_header_bytes: int = Field(default=32_768, ge=1024)  # `gateway serve`: request line + headers
    max_headers: int = Field(default=100, ge=8)  # `gateway serve`: header fields per request
    max_page_size: int = Field(default=10_000, ge=0)  # rows per find; 0: no limit (LoopBack 3)
    max_create_rows: int = Field(default=1_000, ge=1)  # rows per array create
    drain_seconds: float = Field(default=10.0, ge=0)
    snapshot_max_rows: int = Field(default=10_000, ge=1)
    page: bool = True  # the live page at `/` (gateway.web)
    cors_origins: Annotated[list[str], NoDecode] = []

    # Security (docs/security.md). Authentication is off unless a JWT secret or public key is set.
    auth_jwt_secret: SecretStr | None = None
    auth_jwt_public_key: Path | None = None
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwt_leeway: float = Field(default=30.0, ge=0, le=600)
    auth_roles_claim: str = Field(default="roles", min_length=1)
    auth_cookie_name: str = Field(default="gateway_token", pattern=r"^[A-Za-z0-9_.-]+$")
    auth_cookie_secure: bool = True
    auth_allow_query_token: bool = False
    auth_ticket_ttl: float = Field(default=60.0, ge=1, le=600)
    limit_body_bytes: int = Field(default=1_048_576, ge=1024)
    limit_writes_per_second: int = Field(default=0, ge=0)  # per principal (or client IP); 0: no limit
    limit_streams_per_principal: int = Field(default=0, ge=0)  # 0: no limit
    limit_tickets_per_minute: int = Field(default=60, ge=0)  # per principal; 0: no limit

    log_format: Literal["text", "json"] = "text"
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # Read by gunicorn (deploy/gunicorn.conf.py) only; `gateway serve` takes --host/--port/--workers.
    bind: str | None = None
    workers: int | None = Field(default=None, ge=1)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

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

    @field_validator("auth_jwt_secret")
    @classmethod
    def _check_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes (RFC 7518 §3.2: an HS256 key is 256 bits or more)")
        return value

    @model_validator(mode="after")
    def _check_jwt_keys(self) -> Settings:
        if self.auth_jwt_secret is not None and self.auth_jwt_public_key is not None:
            raise ValueError(
                "set GATEWAY_AUTH_JWT_SECRET (HS256) or GATEWAY_AUTH_JWT_PUBLIC_KEY (RS256/ES256), not both"
            )
        return self

    @model_validator(mode="after")
    def _check_retention(self) -> Settings:
        if self.stream_maxlen is not None and self.stream_maxlen < 2 * self.relay_batch:
            raise ValueError(
                f"GATEWAY_STREAM_MAXLEN ({self.stream_maxlen}) must be at least twice "
                f"GATEWAY_RELAY_BATCH ({self.relay_batch})"
            )
        return self

    @property
    def auth_enabled(self) -> bool:
        return self.auth_jwt_secret is not None or self.auth_jwt_public_key is not None

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
