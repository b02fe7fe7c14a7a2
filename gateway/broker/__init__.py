"""The event log every worker shares: the `Broker` contract, its two implementations and `broker_from_url`."""

from gateway.broker.base import Broker, BrokerError, Entry, Lease, LeaseLost, Record, StreamHead
from gateway.broker.continuity import ZERO_OFFSET, Position
from gateway.broker.factory import broker_from_url, redact_url
from gateway.broker.memory import MemoryBroker
from gateway.broker.redis import RedisBroker

__all__ = [
    "ZERO_OFFSET",
    "Broker",
    "BrokerError",
    "Entry",
    "Lease",
    "LeaseLost",
    "MemoryBroker",
    "Position",
    "Record",
    "RedisBroker",
    "StreamHead",
    "broker_from_url",
    "redact_url",
]
