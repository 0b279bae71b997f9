"""Reading a past range of the stream again, over RabbitMQ's stream protocol.

The node's consumer follows the stream's tail; a recovery from the log
(:mod:`tidings.recovery`) needs an older range, ``(after, until]`` in positions, read once
and then left. :class:`StreamScan` reads it on a connection of its own, so the tail's
consumer never moves: it subscribes at offset ``after`` (position ``after + 1``, since a
position is its offset plus one), stops at ``until`` and closes.

*Retention.* A stream subscription asked to start at an offset the broker no longer holds
starts at the first one it holds, so the first offset read tells whether the range is
whole: past ``after``, its start is gone (:class:`~tidings.log.base.RangeGone`).

*Flow.* rstream grants the broker one credit per chunk as it starts handing that chunk
to us, and waits for our callback when it returns an awaitable. Messages are gathered,
undecoded, in batches of :data:`BATCH`; a full batch is put on a queue of :data:`QUEUED`
batches and the loop is let run, and while that queue is full the callback waits, so no
more credit is granted and a bounded number of chunks is in flight whatever the range's
length. The reader decodes a batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Sequence

import rstream

from tidings.config import AmqpSettings
from tidings.log.addresses import AddressRing, stream_addresses
from tidings.log.base import RangeGone
from tidings.log.message import StreamMessage, decode
from tidings.log.stream_protocol import message_from_bytes, new_consumer
from tidings.record import Record

__all__ = ["BATCH", "QUEUED", "StreamScan"]

#: Messages per batch handed to the reader.
BATCH = 200
#: Batches read ahead of the reader.
QUEUED = 4
#: Chunks the broker may send ahead of what rstream handed over.
_CREDIT = 32

# What the callback queues: a batch of (message, offset), or the end of the range.
_Item = list[tuple[bytes, int]] | None


class StreamScan:
    """Reads ranges of the stream, each on a connection of its own.

    Args:
        settings: the ``[amqp]`` settings (the stream, its addresses).
        timeout: seconds to wait for the broker when connecting and between two batches.
        name: the connections' name, shown by ``rabbitmqctl list_stream_connections``.
        logger: where to log.
    """

    def __init__(
        self, settings: AmqpSettings, *, timeout: float, name: str, logger: logging.Logger
    ) -> None:
        self._ring = AddressRing(stream_addresses(settings))
        self._stream = settings.stream
        self._timeout = timeout
        self._name = name
        self._log = logger

    async def scan(self, after: int, until: int) -> AsyncGenerator[Sequence[Record], None]:
        """The records with positions in ``(after, until]``, in batches, in order.

        ``until`` must be a position the stream holds (one the node has read).

        Raises:
            RangeGone: offset ``after`` (position ``after + 1``) is no longer held.
            TimeoutError, OSError, rstream.ServerError: the broker did not serve the range.
        """
        if until <= after:
            return
        queue: asyncio.Queue[_Item] = asyncio.Queue(QUEUED)
        last = until - 1  # the offset of position ``until``
        gathered: list[tuple[bytes, int]] = []
        finished = False

        def received(data: bytes, context: rstream.MessageContext) -> Awaitable[None] | None:
            # Only kept here: decoding waits for the reader, which takes a batch at a time
            # and lets the loop run between batches (rstream hands a whole chunk over in
            # one go, thousands of messages in a busy stream).
            nonlocal gathered, finished
            if finished:
                return None
            offset = context.offset
            if offset > last:
                finished = True
                return _finish(queue, gathered)
            gathered.append((data, offset))
            if offset == last:
                finished = True
                return _finish(queue, gathered)
            if len(gathered) >= BATCH:
                batch, gathered = gathered, []
                return _hand(queue, batch)
            return None

        address = self._ring.current
        consumer = new_consumer(address, self._name, len(self._ring) == 1)
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    await consumer.start()
                    await consumer.subscribe(
                        self._stream,
                        received,
                        offset_specification=rstream.ConsumerOffsetSpecification(
                            rstream.OffsetType.OFFSET, after
                        ),
                        initial_credit=_CREDIT,
                    )
            except BaseException:
                if self._ring.current is address:
                    self._ring.advance()  # its node may be gone: the next scan tries another
                raise
            consumed = after - 1
            while True:
                async with asyncio.timeout(self._timeout):
                    item = await queue.get()
                if item is None:
                    return
                if consumed == after - 1 and item[0][1] > after:
                    raise RangeGone(item[0][1] + 1)
                messages = [self._message(data, offset) for data, offset in item]
                decoded = decode(messages, self._stream, consumed, time.time())
                consumed = decoded.consumed
                if decoded.records:
                    yield decoded.records
        finally:
            finished = True
            while not queue.empty():  # a callback waiting to put is let go before the close
                queue.get_nowait()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await consumer.close()

    def _message(self, data: bytes, offset: int) -> StreamMessage:
        try:
            return message_from_bytes(data, offset)
        except Exception:
            # As the tail's reader does: passed on whole, the router rejects it.
            self._log.exception(
                "stream %r: cannot decode the message at offset %d", self._stream, offset
            )
            return StreamMessage(offset, "", "", data)


async def _hand(queue: asyncio.Queue[_Item], batch: list[tuple[bytes, int]]) -> None:
    """Queues a batch and lets the loop run (a put on a queue with room never waits)."""
    await queue.put(batch)
    await asyncio.sleep(0)


async def _finish(queue: asyncio.Queue[_Item], batch: list[tuple[bytes, int]]) -> None:
    """Queues the last batch (if any) and then the end of the range."""
    if batch:
        await queue.put(batch)
    await queue.put(None)
