"""Quarantine: copies of the records the node could not route, kept in an exchange.

With ``amqp.quarantine_exchange`` set, :meth:`Quarantine.put` queues a copy of a rejected
record and a background loop publishes it there: the original body, headers and routing
key plus ``x-tidings-reject-kind``, ``x-tidings-reject-reason``, ``x-tidings-position`` and
``x-tidings-epoch``. A copy that cannot be sent (no queue bound, broker gone, backlog full)
is logged and counted in :attr:`Quarantine.failed`, never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange
from aiormq.exceptions import AMQPError, PublishError

from tidings.log.broker import describe
from tidings.record import Record

__all__ = [
    "REJECT_EPOCH_HEADER",
    "REJECT_KIND_HEADER",
    "REJECT_POSITION_HEADER",
    "REJECT_REASON_HEADER",
    "Quarantine",
]

#: Headers added to the copy.
REJECT_KIND_HEADER = "x-tidings-reject-kind"
REJECT_REASON_HEADER = "x-tidings-reject-reason"
REJECT_POSITION_HEADER = "x-tidings-position"
REJECT_EPOCH_HEADER = "x-tidings-epoch"


class Quarantine:
    """Sends copies of rejected records to the quarantine exchange, in the background.

    Args:
        target: the quarantine exchange (on a channel with publisher confirms).
        epoch: the log's current epoch, stamped on each copy.
        backlog: copies waiting to be sent beyond which new ones are dropped (and
            logged), so a broker outage cannot grow memory.
        timeout: seconds to wait for the broker to confirm one copy.
        logger: where to log.

    Attributes:
        failed: copies that could not be published.
    """

    def __init__(
        self,
        target: AbstractExchange,
        epoch: Callable[[], str],
        *,
        backlog: int,
        timeout: float,
        logger: logging.Logger,
    ) -> None:
        self._target = target
        self._epoch = epoch
        self._backlog = backlog
        self._timeout = timeout
        self._log = logger
        self._pending: deque[tuple[Record, str, str]] = deque()
        self._wakeup = asyncio.Event()
        self.failed = 0

    def put(self, record: Record, kind: str, reason: str) -> None:
        """Queues a copy of ``record`` for the background loop (:meth:`run`)."""
        if len(self._pending) >= self._backlog:
            self.failed += 1
            self._log.error(
                "quarantine backlog full (%d): copy of position %d (%s) dropped",
                self._backlog,
                record.position,
                kind,
            )
            return
        self._pending.append((record, kind, reason))
        self._wakeup.set()

    async def run(self) -> None:
        """Sends the queued copies as they come, until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._send()

    async def close(self) -> None:
        """Sends what is still queued, for two seconds at most; counts the rest as failed.

        Call once :meth:`run` is cancelled.
        """
        if self._pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._timeout, 2.0)):
                    await self._send()
        if self._pending:
            self.failed += len(self._pending)
            self._log.error("closing with %d quarantine copies unsent", len(self._pending))
            self._pending.clear()

    async def _send(self) -> None:
        target = self._target
        while self._pending:
            record, kind, reason = self._pending[0]
            headers: dict[str, Any] = _encodable(record.headers)
            headers[REJECT_KIND_HEADER] = kind
            headers[REJECT_REASON_HEADER] = reason[:1000]
            headers[REJECT_POSITION_HEADER] = record.position
            headers[REJECT_EPOCH_HEADER] = self._epoch()
            message = aio_pika.Message(
                record.body,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=datetime.fromtimestamp(record.timestamp, UTC),
            )
            try:
                async with asyncio.timeout(self._timeout):
                    await target.publish(message, routing_key=record.routing_key, mandatory=True)
            except PublishError:
                self.failed += 1
                self._log.error(
                    "quarantine exchange %r has no queue bound: copy of position %d dropped",
                    target.name,
                    record.position,
                )
            except (AMQPError, ConnectionError, RuntimeError, TimeoutError, TypeError) as exc:
                # TypeError: a header value of a type AMQP 0-9-1 cannot carry.
                self.failed += 1
                self._log.error(
                    "could not copy position %d to quarantine exchange %r: %s",
                    record.position,
                    target.name,
                    describe(exc),
                )
            self._pending.popleft()


def _encodable(headers: Mapping[str, Any]) -> dict[str, Any]:
    """``headers`` as AMQP 0-9-1 can send them again: binary values (the bytes a header
    that is not UTF-8 text was read as) become byte arrays, inside tables and arrays too."""

    def value(v: Any) -> Any:
        if isinstance(v, bytes):
            return bytearray(v)
        if isinstance(v, Mapping):
            return {str(k): value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [value(x) for x in v]
        return v

    return {key: value(v) for key, v in headers.items()}
