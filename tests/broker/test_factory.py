"""`broker_from_url`: schemes, options, redaction, and real Sentinel and Cluster deployments."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.broker.base import Broker
from gateway.broker.factory import broker_from_url, redact_url
from gateway.broker.memory import MemoryBroker
from gateway.broker.redis import RedisBroker
from tests.redis_server import RedisServers

from . import exercise


@pytest.fixture
async def built() -> AsyncIterator[list[Broker]]:
    """Brokers a test built, all closed afterwards."""
    brokers: list[Broker] = []
    yield brokers
    for broker in brokers:
        await broker.aclose()


def _build(built: list[Broker], url: str, **options: object) -> Broker:
    broker = broker_from_url(url, **options)  # type: ignore[arg-type]
    built.append(broker)
    return broker


async def test_memory_url(built: list[Broker]) -> None:
    assert isinstance(_build(built, "memory://"), MemoryBroker)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://user:pw@127.0.0.1:6379/2?socket_timeout=1",
        "rediss://127.0.0.1:6380",
        "redis+sentinel://127.0.0.1:26379,127.0.0.2/mymaster/1?sentinel_password=x",
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
    ],
)
async def test_redis_urls_build_without_connecting(built: list[Broker], url: str) -> None:
    broker = _build(built, url, prefix="app1")
    assert isinstance(broker, RedisBroker)
    assert broker.keys_for("todos").stream == "{app1:todos}:s"
    assert "pw" not in repr(broker)


@pytest.mark.parametrize(
    "url", ["amqp://user:hunter2@host/", "http://host", "redis-sentinel://:hunter2@host/x", "nothing"]
)
def test_unknown_schemes_are_refused_with_the_url_redacted(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported broker URL scheme") as refused:
        broker_from_url(url)
    assert "hunter2" not in str(refused.value)
    assert repr(url.partition(":")[0] if ":" in url else "") in str(refused.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://127.0.0.1:26379", "must name the service"),
        ("redis+sentinel://127.0.0.1:26379/a/b/c", "must name the service"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/x", "bad database"),
        ("redis+sentinel://127.0.0.1:port/mymaster", "bad host"),
        ("redis+sentinel://:hunter2@127.0.0.1/mymaster?db=1", "unsupported option"),
        ("redis+cluster://127.0.0.1:7000/0", "no databases"),
    ],
)
def test_malformed_sentinel_and_cluster_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as refused:
        broker_from_url(url)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(("prefix", "maxlen"), [("", 100), ("a{b", 100), ("gw", 0)])
def test_bad_prefix_or_maxlen_is_refused(prefix: str, maxlen: int) -> None:
    with pytest.raises(ValueError, match=r"prefix|stream_maxlen"):
        broker_from_url("redis://127.0.0.1", prefix=prefix, stream_maxlen=maxlen)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://user:hunter2@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:hunter2@host", "redis://:***@host"),
        ("redis://user@host", "redis://user@host"),
        ("redis://host/0?password=hunter2&db=1", "redis://host/0?password=***&db=1"),
        (
            "redis+sentinel://:hunter2@h1:26379,h2/mymaster?sentinel_password=hunter3",
            "redis+sentinel://:***@h1:26379,h2/mymaster?sentinel_password=***",
        ),
        ("memory://", "memory://"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


async def test_a_sentinel_deployment(redis_servers: RedisServers, built: list[Broker]) -> None:
    master = redis_servers.start(password="master-secret")
    sentinel = redis_servers.sentinel(master, service="mymaster")
    url = f"redis+sentinel://:master-secret@127.0.0.1:{sentinel.port}/mymaster/0"
    await exercise(_build(built, url, prefix="gw"))


async def test_a_cluster_deployment(redis_servers: RedisServers, built: list[Broker]) -> None:
    """Every key a stream uses is in one slot (Lua would fail with CROSSSLOT otherwise), and pub/sub works."""
    nodes = redis_servers.cluster(masters=3)
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in nodes[:2])
    broker = _build(built, url, prefix="gw")
    for stream in ("todos", "notes", "users"):  # different tags, so different slots and nodes
        await exercise(broker, stream)
