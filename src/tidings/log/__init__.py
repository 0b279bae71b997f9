"""The event log: where every event gets its position (embedded memory log or a RabbitMQ stream)."""

from __future__ import annotations

from tidings.log.base import Log, LogConsumer

__all__ = ["Log", "LogConsumer"]
