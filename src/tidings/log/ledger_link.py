"""The ledger's link to its stream: attaching to it, and attaching again after a loss.

An attachment is a channel of the ledger's robust connection that declares the stream
(:func:`stream_arguments`), consumes it over AMQP 0-9-1 from the offset the replay reads
next (``first`` at start-up) and publishes to it with confirms; what it reads goes to the
ledger in stream order, acknowledged once per loop iteration. A first attachment that
fails but for settings or permissions is tried again by the reattach loop, for at most
three timeouts (workers that declare a new stream at once are refused for a moment).

*Reconnects.* On the loss of the channel or the connection the ledger is not ready (and
``/readyz`` says so, through ``node.ready``); once aio-pika has reconnected the loop
consumes again from the offset after the last one read, and the ledger writes a new mark
and is ready again once it has read it back: no write is lost or applied twice (records
read before are skipped by offset). Offsets do not always grow by one (RabbitMQ keeps
some for itself): when the first record after a reconnect comes past the offset asked
for, the link holds what comes while it reads the stream's first offset; past the one
asked for too, the retention dropped records it had not read, and the replay seeks a
snapshot as at start-up.

*A deleted stream.* The table cannot be rebuilt from a stream deleted under the running
ledger (a new one would start empty, its offsets over): the broker cancels the consumer,
and the link logs an error and stops (:attr:`StreamLink.gone`), the ledger not ready for
good and refusing writes until the node is restarted. Do not delete the ledger's stream
while nodes run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiormq
import aiormq.abc
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed, PublishError

from tidings.config import AmqpSettings, LedgerSettings
from tidings.ledger import LedgerError
from tidings.log.broker import SourceError, connect_beside, describe
from tidings.log.ledger_replay import Replay

__all__ = ["StreamLink", "stream_arguments"]

# The ledger's rooms log as one.
log = logging.getLogger("tidings.log.ledger")

#: Records the broker sends ahead of the acknowledgements.
PREFETCH = 1000
#: What RabbitMQ answers a declare that reaches a stream still being created.
NOT_CREATED_YET = "does not have a replica on the local node"


def stream_arguments(amqp: AmqpSettings, ledger: LedgerSettings) -> dict[str, Any]:
    """The ledger's stream queue arguments: retention by size only (the table must not
    expire), segments of a sixteenth of it, the replicas of ``amqp.stream_replicas``."""
    arguments: dict[str, Any] = {
        "x-queue-type": "stream",
        "x-max-length-bytes": ledger.max_bytes,
        "x-stream-max-segment-size-bytes": ledger.max_bytes // 16,
    }
    if amqp.stream_replicas:
        arguments["x-initial-cluster-size"] = amqp.stream_replicas
    return arguments


class StreamLink:
    """One attachment at a time to the ledger's stream, and the loop that keeps one.

    Args:
        amqp: the ``[amqp]`` settings (the broker, ``stream_replicas``).
        settings: the ``[ledger]`` settings.
        replay: where reading resumes (its next offset), told of records dropped unread.
        on_record: called with each record's offset and body, in stream order.
        on_attached: awaited once an attachment consumes (the ledger writes its mark;
            closing the channel there has the loop attach again).
        on_away: called when an attachment is about to consume, or was lost: the
            ledger is not caught up.
        name: the connection's name, shown by RabbitMQ.
        timeout: the limit of every broker operation.
    """

    def __init__(
        self,
        amqp: AmqpSettings,
        settings: LedgerSettings,
        *,
        replay: Replay,
        on_record: Callable[[int, bytes], None],
        on_attached: Callable[[aiormq.abc.AbstractChannel], Awaitable[None]],
        on_away: Callable[[], None],
        name: str,
        timeout: float,
    ) -> None:
        self._amqp = amqp
        self.stream = settings.stream_name(amqp)
        self._arguments = stream_arguments(amqp, settings)
        self._max_bytes = settings.max_bytes
        self._replay = replay
        self._on_record = on_record
        self._on_attached = on_attached
        self._on_away = on_away
        self._name = name
        self._timeout = timeout
        self._conn: AbstractRobustConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # The channel of this attachment (None while away).
        self._channel: AbstractChannel | None = None
        self._raw: aiormq.abc.AbstractChannel | None = None
        # A resumed attachment: the offset it asked for until its first record came, and
        # what it delivered while the link checks that nothing was dropped unread.
        self._resume: int | None = None
        self._held: list[tuple[int, bytes]] | None = None
        # The last delivery taken, acknowledged with all before it once per loop iteration.
        self._ack_tag = 0
        self._ack_due = False
        #: Set once a channel consumes the stream (the first attachment at start-up).
        self._attached = asyncio.Event()
        #: Why the link stopped for good (its stream deleted), or None.
        self.gone: str | None = None

    @property
    def raw(self) -> aiormq.abc.AbstractChannel | None:
        """The channel of the current attachment, or None while away."""
        return self._raw

    async def open(self) -> None:
        """Connects, attaches (or has the loop attach, within three timeouts) and starts
        the loop that attaches again after every loss.

        Raises:
            SourceError: no broker (after ``amqp.retry_on_start``), a refused login, a
                stream that exists with other settings, or none attached in time.
        """
        connection, follower = await connect_beside(self._amqp, self._name, log)
        self._conn = connection
        if follower is not None:
            self._tasks.append(follower)
        failed: Exception | None = None
        try:
            await self._attach()
        except SourceError:
            raise
        except Exception as exc:
            # RabbitMQ refuses declares of a stream being created (a channel error, or
            # INTERNAL_ERROR closing the connection): _run attaches again once back.
            log.info("ledger: cannot attach to stream %r yet (%s)", self.stream, describe(exc))
            failed = exc
        self._tasks.append(asyncio.get_running_loop().create_task(self._run()))
        if failed is not None:
            try:
                async with asyncio.timeout(3 * self._timeout):
                    await self._attached.wait()
            except TimeoutError:
                raise SourceError(
                    f"cannot set up the ledger's stream {self.stream!r}: {describe(failed)}"
                ) from failed

    async def publish(self, raw: aiormq.abc.AbstractChannel, body: bytes) -> None:
        """Publishes ``body`` to the stream and waits for the broker's confirm.

        Raises:
            LedgerError: refused, returned or lost with the connection.
        """
        properties = aiormq.spec.Basic.Properties(delivery_mode=2)
        try:
            confirm = await raw.basic_publish(
                body, routing_key=self.stream, mandatory=True, properties=properties
            )
        except PublishError:
            raise LedgerError(f"stream {self.stream!r} is gone (the write was returned)") from None
        except Exception as exc:  # aiormq fails a confirm with a bare Exception at a close
            raise LedgerError(describe(exc)) from exc
        if not isinstance(confirm, aiormq.spec.Basic.Ack):
            raise LedgerError(f"RabbitMQ refused the write ({type(confirm).__name__})")

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs ``work`` in a task that :meth:`close` cancels if it has not ended."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    async def close(self) -> None:
        """Cancels the loop and every task, then disconnects."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._raw = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await self._conn.close()

    async def close_quietly(self, channel: AbstractChannel | aiormq.abc.AbstractChannel) -> None:
        """Closes ``channel``, whatever happens (the loop notices the loss)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await channel.close()

    # -- attaching -----------------------------------------------------------------------

    async def _attach(self) -> None:
        """Opens a channel, declares the stream, consumes from the next offset, has the
        ledger mark (a mark not confirmed closes the channel again: see _run).

        Raises:
            SourceError: the stream exists with other settings, or the user may not use it.
            Exception: the broker went away meanwhile (aiormq's errors, a bare Exception
                for a future failed at a close, TimeoutError).
        """
        assert self._conn is not None
        async with asyncio.timeout(self._timeout):
            channel = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        try:
            async with asyncio.timeout(self._timeout):
                raw = await channel.get_underlay_channel()
                await self._declare(raw)
                await raw.basic_qos(prefetch_count=PREFETCH)
                offset = self._replay.next
                self._on_away()
                self._resume, self._held = offset, None
                # Before the consume: deliveries may come before its reply is read.
                self._channel, self._raw = channel, raw
                tag = f"ledger-{uuid.uuid4().hex[:12]}"
                raw.on_consumer_cancel_callbacks.add(functools.partial(self._on_cancel, raw, tag))
                await raw.basic_consume(
                    self.stream,
                    functools.partial(self._on_message, raw),
                    arguments={"x-stream-offset": "first" if offset is None else offset},
                    consumer_tag=tag,
                )
                self._attached.set()
        except BaseException:
            self._channel = self._raw = None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await channel.close()
            raise
        await self._on_attached(raw)

    async def _declare(self, raw: aiormq.abc.AbstractChannel) -> None:
        try:
            await raw.queue_declare(self.stream, durable=True, arguments=self._arguments)
        except ChannelPreconditionFailed as exc:
            if NOT_CREATED_YET in str(exc):
                raise  # another worker's declare is creating it: attach again (see open)
            replicas = self._arguments.get("x-initial-cluster-size", "none")
            raise SourceError(
                f"queue {self.stream!r} exists with other settings ({describe(exc)}): the "
                f"ledger needs a stream queue with x-max-length-bytes {self._max_bytes} "
                "(ledger.max_bytes), x-stream-max-segment-size-bytes "
                f"{self._max_bytes // 16} and x-initial-cluster-size {replicas} "
                "(amqp.stream_replicas); set those to the existing values or point "
                "ledger.stream at another name"
            ) from None
        except ChannelAccessRefused as exc:
            raise SourceError(
                f"the user in amqp.url may not declare queue {self.stream!r} "
                f"({describe(exc)}): grant it configure, write and read permissions on "
                "that name, or point ledger.stream at one it may use"
            ) from None

    async def _run(self) -> None:
        """Waits for the loss of the attachment, then attaches again, for ever."""
        while True:
            raw = self._raw
            if raw is not None:
                await asyncio.wait([raw.closing])
                self._lost(raw)
            if self.gone is not None:
                return
            try:
                await self._reattach()
            except SourceError as exc:
                log.error("ledger: %s", exc)
                await asyncio.sleep(self._amqp.reconnect_interval)
            except Exception as exc:  # aiormq fails futures with a bare Exception at a close
                log.debug("ledger: cannot attach yet (%s)", describe(exc))
                await asyncio.sleep(self._amqp.reconnect_interval)

    async def _reattach(self) -> None:
        assert self._conn is not None
        await self._conn.connected.wait()
        await self._attach()
        log.info("ledger: reading stream %r again from offset %s", self.stream, self._replay.next)

    def _on_cancel(
        self, raw: aiormq.abc.AbstractChannel, tag: str, frame: aiormq.spec.Basic.Cancel
    ) -> None:
        if frame.consumer_tag != tag or raw is not self._raw:
            return
        self.gone = f"the ledger's stream {self.stream!r} was deleted"
        log.error(
            "ledger: stream %r was deleted under it: the table cannot be rebuilt from a new "
            "one; the ledger stops (not ready, writes refused) until the node restarts",
            self.stream,
        )
        # The channel's closing wakes the loop in _run, which then stops.
        self.spawn(self.close_quietly(raw))

    def _lost(self, raw: aiormq.abc.AbstractChannel) -> None:
        if raw is not self._raw:
            return
        self._raw = None
        self._on_away()
        # What was held back is read again from the same offset at the next attachment.
        self._resume = self._held = None
        log.warning(
            "ledger: lost stream %r; resuming from offset %s once reconnected",
            self.stream,
            self._replay.next,
        )
        channel, self._channel = self._channel, None
        if channel is not None:
            # So that aio-pika does not reopen it: the next attachment opens its own.
            self.spawn(self.close_quietly(channel))

    def _forget(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    # -- reading -------------------------------------------------------------------------

    async def _on_message(
        self, raw: aiormq.abc.AbstractChannel, message: aiormq.abc.DeliveredMessage
    ) -> None:
        # aiormq runs this in a task per message, started in delivery order: everything
        # up to the first await runs in stream order.
        if raw is not self._raw:
            return  # a delivery of an attachment already lost
        headers = message.header.properties.headers or {}
        offset = headers.get("x-stream-offset")
        if isinstance(offset, int):
            self._take(raw, offset, message.body)
        tag = getattr(message.delivery, "delivery_tag", None)
        if tag is not None:
            # One acknowledgement of everything taken per loop iteration, not one per record.
            self._ack_tag = tag
            if not self._ack_due:
                self._ack_due = True
                asyncio.get_running_loop().call_soon(self._ack, raw)

    def _ack(self, raw: aiormq.abc.AbstractChannel) -> None:
        self._ack_due = False
        if raw is not self._raw or raw.is_closed:
            return
        self.spawn(self._ack_now(raw, self._ack_tag))

    async def _ack_now(self, raw: aiormq.abc.AbstractChannel, tag: int) -> None:
        with contextlib.suppress(Exception):
            await raw.basic_ack(tag, multiple=True)

    def _take(self, raw: aiormq.abc.AbstractChannel, offset: int, body: bytes) -> None:
        if self._held is not None:
            self._held.append((offset, body))
            return
        resume, self._resume = self._resume, None
        if resume is not None and offset > resume:
            # Either offsets RabbitMQ kept for itself, or records dropped by the retention
            # while away: the stream's first offset tells which.
            self._held = [(offset, body)]
            self.spawn(self._check_resume(raw, resume))
            return
        self._on_record(offset, body)

    async def _check_resume(self, raw: aiormq.abc.AbstractChannel, resume: int) -> None:
        try:
            first = await self._first_offset(raw)
        except Exception as exc:  # as in _run: any failure of the link
            log.debug("ledger: cannot read the stream's first offset (%s)", describe(exc))
            return  # the attachment is lost with its channel: resumed again later
        held = self._held
        if raw is not self._raw or held is None:
            return
        self._held = None
        if first > resume:
            # Offsets kept since ``resume`` were readable when the consumer started only
            # if the retention dropped them since (it only drops): assume the worst.
            log.warning(
                "ledger: the retention of stream %r dropped records not read yet (offsets "
                "%d to %d): seeking a snapshot",
                self.stream,
                resume,
                held[0][0] - 1,
            )
            self._replay.lost(held[0][0])
        for offset, body in held:
            self._on_record(offset, body)

    async def _first_offset(self, raw: aiormq.abc.AbstractChannel) -> int:
        """The first offset the stream holds, read by a consumer of one record."""
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            offset = (message.header.properties.headers or {}).get("x-stream-offset")
            if not got.done() and isinstance(offset, int):
                got.set_result(offset)

        tag = f"ledger-first-{uuid.uuid4().hex[:8]}"
        async with asyncio.timeout(self._timeout):
            await raw.basic_consume(
                self.stream, on_message, arguments={"x-stream-offset": "first"}, consumer_tag=tag
            )
            try:
                return await got
            finally:
                with contextlib.suppress(Exception):
                    await raw.basic_cancel(tag)
