"""What the stream's consumer delivered, handed to the node in batches, and acknowledged.

Messages that arrived together are handed over as one batch, in position order, once per
event-loop iteration (:meth:`Inbox.flush`). A record's position is its stream offset plus
one, the same on every node; plus one because offsets start at 0 and position 0 means
"none" to clients and to :attr:`~tidings.log.base.Log.position`. Control messages move the
position too, and are acted on here: the marker being waited for ends a catch-up, beacons
go to the :class:`~tidings.log.epoch.EpochKeeper`.

Acknowledgements follow ``on_records`` (so only what the hub has taken is acknowledged),
one ``basic.ack(multiple)`` per quarter of the prefetch: for a stream they are flow
control, not progress. Over the stream protocol rstream gives credits per chunk instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiormq.abc import DeliveredMessage

from tidings.log.base import LogConsumer
from tidings.log.control import Beacon, Marker
from tidings.log.message import StreamMessage, decode, fingerprint, from_delivery

__all__ = ["Inbox"]


class Inbox:
    """Collects the consumer's messages and hands them over in batches.

    It starts held: nothing is handed over until :meth:`catch_up` lets it flow.

    Args:
        consumer: takes the records and the epoch changes.
        stream: the stream queue's name (control messages are addressed to it).
        prefetch: the consumer's prefetch; a quarter of it is acknowledged at a time.
        clock: wall-clock seconds; stamps records that carry no timestamp.
        on_beacon: called with each beacon read, and its offset.
        logger: where to log.

    Attributes:
        consumed: the last offset read, records and control messages alike; -1 before any.
        last_print: the fingerprint of the message read at ``consumed``, None before any.
        last_position: position of the last record handed to the consumer, 0 if none.
        last_record_time: its timestamp (seconds since the epoch), None if none.
    """

    def __init__(
        self,
        consumer: LogConsumer,
        stream: str,
        prefetch: int,
        *,
        clock: Callable[[], float],
        on_beacon: Callable[[int, Beacon], None],
        logger: logging.Logger,
    ) -> None:
        self._consumer = consumer
        self._stream = stream
        self._clock = clock
        self._on_beacon = on_beacon
        self._log = logger
        self._messages: list[StreamMessage] = []
        self._ack_target: DeliveredMessage | None = None
        self._unacked = 0
        self._ack_every = max(1, prefetch // 4)
        self._acks: set[asyncio.Future[Any]] = set()
        self._flush_scheduled = False
        self._hold = True
        self._awaited_marker: str | None = None
        self._caught_up: asyncio.Future[None] | None = None
        self.consumed = -1
        self.last_print: int | None = None
        self.last_position = 0
        self.last_record_time: float | None = None

    def on_delivery(self, message: DeliveredMessage) -> None:
        """Takes a message delivered over AMQP 0-9-1 (by the current consumer)."""
        read = from_delivery(message)
        if read is None:
            return
        self._messages.append(read)
        self._ack_target = message
        self._unacked += 1
        self._schedule_flush()

    def on_stream_message(self, message: StreamMessage) -> None:
        """Takes a message read over the stream protocol (rstream, one call per message)."""
        self._messages.append(message)
        self._schedule_flush()

    def hold(self) -> None:
        """Stops handing over; what was received but not handed over is dropped, after
        handing over what a consumer that was flowing had delivered (still good)."""
        if not self._hold:
            self.flush()
        self._hold = True
        self._messages.clear()

    def drop(self) -> None:
        """Drops what was received and not handed over."""
        self._messages.clear()

    def catch_up(self, marker: Marker) -> asyncio.Future[None]:
        """Lets messages flow; the future is done once ``marker`` was read."""
        self._awaited_marker = marker.id
        caught_up = self._caught_up = asyncio.get_running_loop().create_future()
        self._hold = False
        self._schedule_flush()
        return caught_up

    def forget_unacked(self) -> None:
        """Forgets the unacknowledged deliveries: they are their channel's business, not
        the next consumer's."""
        self._ack_target = None
        self._unacked = 0

    def restart(self, epoch: str) -> None:
        """The stream was replaced: forgets every position and tells the consumer."""
        self.consumed = -1
        self.last_print = None
        self.last_position = 0
        self.last_record_time = None
        try:
            self._consumer.on_epoch(epoch)
        except Exception:
            self._log.exception("the consumer failed on the new epoch %s", epoch)

    def pending_acks(self) -> list[asyncio.Future[Any]]:
        """The acknowledgements on their way, to cancel on close."""
        return list(self._acks)

    def flush(self) -> None:
        """Hands the received messages over in position order and acknowledges them."""
        self._flush_scheduled = False
        if self._hold or not self._messages:
            return
        inbox, self._messages = self._messages, []
        decoded = decode(inbox, self._stream, self.consumed, self._clock())
        if decoded.last is not None:
            # Remembered to recognise the stream after a reconnect (the supervisor's check).
            self.last_print = fingerprint(decoded.last)
        self.consumed = decoded.consumed
        reached = False
        for offset, control in decoded.controls:
            if isinstance(control, Marker):
                reached = control.id == self._awaited_marker or reached
            elif isinstance(control, Beacon):
                self._on_beacon(offset, control)
        records = decoded.records
        if records:
            self.last_position = records[-1].position
            self.last_record_time = records[-1].timestamp
            try:
                self._consumer.on_records(records)
            except Exception:
                self._log.exception(
                    "the consumer failed on records %d..%d",
                    records[0].position,
                    records[-1].position,
                )
        if self._ack_target is not None and self._unacked >= self._ack_every:
            self._ack(self._ack_target)
        if reached:
            self._awaited_marker = None
            if self._caught_up is not None and not self._caught_up.done():
                self._caught_up.set_result(None)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._hold and self._messages:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def _ack(self, last: DeliveredMessage) -> None:
        # Acknowledgements are a stream's flow control (it sends ``prefetch`` unacknowledged
        # messages at most), not a record of progress: the position is. One ack for a
        # quarter of the prefetch keeps the broker sending without an ack per batch; what
        # stays unacknowledged while the stream is quiet costs nothing.
        self._unacked = 0
        channel = last.channel
        if channel.is_closed:
            return
        ack = asyncio.ensure_future(channel.basic_ack(_delivery_tag(last), multiple=True))
        self._acks.add(ack)
        ack.add_done_callback(self._ack_done)

    def _ack_done(self, ack: asyncio.Future[Any]) -> None:
        self._acks.discard(ack)
        if not ack.cancelled():
            ack.exception()  # the channel closed meanwhile: the next consumer re-reads


def _delivery_tag(message: DeliveredMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None
    return tag
