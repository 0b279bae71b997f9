"""The stream's consumer: where it is attached, over which protocol, and when it is lost.

*Two readers.* The consumer reads over RabbitMQ's stream protocol
(:mod:`tidings.log.stream_protocol`, about twice the messages per CPU second) when
``amqp.reader`` allows it; a read from "next" (no warm window) starts on AMQP 0-9-1 and
hands over at the following offset once caught up (:meth:`Tail.hand_over`). With
``amqp.reader = "auto"`` a broker without the plugin is read over AMQP 0-9-1 only (logged
once at start-up), and a stream protocol that fails later is replaced by AMQP 0-9-1 until
the next reconnect.

*Warm-up.* The consumer attaches at ``x-stream-offset = "<N>s"`` (N = the warm seconds
rounded up; ``next`` for none), an interval the broker turns into a timestamp with its own
clock, so a node whose clock is off still reads the right window. The warm-up ends at a
*marker* written into the stream right after attaching (over the stream protocol, right
before: its chunk gives the broker's time); everything the stream held at start-up,
within the window, comes before it. The window works per stream chunk, so a few records
just older than it may come as well; the hub's own TTL trims them.

*AMQP 0-9-1.* The stream is consumed through aiormq's ``basic_consume`` on a channel of
aio-pika's robust connection, not through aio-pika's robust consumer: that one would be
restored with its original arguments, i.e. the start-up window, and deliver records twice.
A closed channel, a consumer cancelled by the broker (the stream was deleted) or a lost
stream protocol subscription is reported once to ``on_lost``; re-attaching is the
supervisor's (:mod:`tidings.log.supervisor`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiormq
import aiormq.abc
from aiormq.abc import DeliveredMessage

from tidings.config import AmqpSettings
from tidings.log.broker import SourceError, StreamLost, describe
from tidings.log.control import Marker
from tidings.log.inbox import Inbox
from tidings.log.stream_protocol import StreamProtocolReader

__all__ = ["Tail"]


class Tail:
    """The consumer of the stream, attached at an offset over one of the two protocols.

    Args:
        settings: the ``[amqp]`` settings (the stream, ``reader``, the stream port).
        inbox: where what is read goes.
        mark: writes a marker at the stream's tail.
        on_lost: called with a reason, and whether the stream itself is gone (deleted or
            moved), when the consumer is lost.
        timeout: seconds to wait for any broker reply.
        name: the connection name of the stream protocol connection.
        logger: where to log.
    """

    def __init__(
        self,
        settings: AmqpSettings,
        inbox: Inbox,
        *,
        mark: Callable[[], Awaitable[Marker]],
        on_lost: Callable[[str, bool], None],
        timeout: float,
        name: str,
        logger: logging.Logger,
    ) -> None:
        self._settings = settings
        self._inbox = inbox
        self._mark = mark
        self._on_lost = on_lost
        self._timeout = timeout
        self._name = name
        self._log = logger
        # The stream protocol reader (None: AMQP 0-9-1 only) and whether it is the one
        # reading now; see consume.
        self._fast: StreamProtocolReader | None = None
        self._via_stream = False
        # The AMQP 0-9-1 consumer: its channel and its tag.
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._tag: str | None = None

    @property
    def reader(self) -> str:
        """How the stream is read: ``stream`` (the stream protocol) or ``amqp``."""
        return "stream" if self._fast is not None else "amqp"

    async def open(self) -> None:
        """Sets up the stream protocol reader, as ``amqp.reader`` asks and the broker allows.

        Raises:
            SourceError: ``amqp.reader`` is ``stream`` and the protocol is not reachable.
        """
        mode = self._settings.reader
        if mode == "amqp":
            return
        reader = StreamProtocolReader(
            self._settings,
            on_message=self._inbox.on_stream_message,
            on_lost=self._on_stream_lost,
            timeout=self._timeout,
            name=self._name,
            logger=self._log,
        )
        try:
            await reader.probe()
        except Exception as exc:
            if mode == "stream":
                raise SourceError(
                    f"cannot reach RabbitMQ's stream protocol at {reader.address} "
                    f"({describe(exc)}): enable the rabbitmq_stream plugin, check "
                    'amqp.stream_port, or set amqp.reader = "amqp"'
                ) from None
            self._log.warning(
                "RabbitMQ's stream protocol is not reachable at %s (%s): reading stream %r "
                "over AMQP 0-9-1, about half as fast (enable the rabbitmq_stream plugin, "
                'or set amqp.reader = "amqp")',
                reader.address,
                describe(exc),
                self._settings.stream,
            )
            return
        self._log.info(
            "reading stream %r over the stream protocol at %s",
            self._settings.stream,
            reader.address,
        )
        self._fast = reader

    async def start_warm(self, channel: aiormq.abc.AbstractChannel, warm_seconds: float) -> Marker:
        """Starts the consumer at the warm window; returns the marker that ends it.

        The window is counted back by the broker's clock. Over the stream protocol the
        marker is written first: its chunk gives the broker's time.
        """
        if self._fast is not None and warm_seconds > 0:
            marker = await self._mark()
            if await self._subscribe_fast(channel, self._fast.subscribe_since(warm_seconds)):
                return marker
            # The window of AMQP 0-9-1 reaches past the marker just written: it is read.
            await self.consume(channel, _warm_offset(warm_seconds))
            return marker
        await self.consume(channel, _warm_offset(warm_seconds))
        return await self._mark()

    async def hand_over(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Moves a caught-up AMQP 0-9-1 consumer to the stream protocol, if there is one
        (a read from "next", or after the stream protocol failed once)."""
        if self._fast is None or self._via_stream:
            return
        await self.cancel()
        self._inbox.flush()  # what the AMQP consumer delivered before its cancel-ok
        await self.consume(channel, self._inbox.consumed + 1)

    async def consume(self, channel: aiormq.abc.AbstractChannel, offset: int | str) -> None:
        """Starts the consumer at ``offset``: over the stream protocol when it is a
        number and the protocol is available, else over AMQP 0-9-1 on ``channel``."""
        if (
            isinstance(offset, int)
            and self._fast is not None
            and await self._subscribe_fast(channel, self._fast.subscribe(offset))
        ):
            return
        self._via_stream = False
        self._watch(channel)
        tag = f"tidings-{uuid.uuid4().hex[:12]}"
        self._tag = tag
        await channel.basic_consume(
            self._settings.stream,
            self._on_delivery,
            arguments={"x-stream-offset": offset},
            consumer_tag=tag,
            timeout=self._timeout,
        )

    async def cancel(self) -> None:
        """Stops the consumer, whichever protocol it reads over."""
        tag, channel = self._tag, self._underlay
        self._tag = None
        self._inbox.forget_unacked()
        if self._fast is not None:
            self._via_stream = False
            await self._fast.cancel()
        if tag is not None and channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.basic_cancel(tag, timeout=self._timeout)

    async def _subscribe_fast(
        self, channel: aiormq.abc.AbstractChannel, subscribing: Coroutine[Any, Any, None]
    ) -> bool:
        """Awaits a stream protocol subscription; False if it failed and AMQP 0-9-1 is to
        read instead (``amqp.reader = "auto"``).

        Raises:
            StreamLost: it failed and ``amqp.reader`` is ``stream``.
        """
        try:
            await subscribing
        except Exception as exc:
            if self._settings.reader == "stream":
                raise StreamLost(f"stream protocol: {describe(exc)}") from exc
            self._log.warning(
                "stream %r: the stream protocol failed (%s); reading over AMQP 0-9-1 "
                "until the next reconnect",
                self._settings.stream,
                describe(exc),
            )
            return False
        self._via_stream = True
        self._watch(channel)
        return True

    def _watch(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Notices when ``channel`` closes or its consumer is cancelled."""
        if channel is not self._underlay:
            self._underlay = channel
            channel.on_consumer_cancel_callbacks.add(self._on_cancelled)
            channel.closing.add_done_callback(
                lambda _: self._on_closed(channel, "connection or channel closed")
            )

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        # aiormq runs this in a task of its own per message; the inbox only queues it,
        # and one flush per loop iteration hands the whole batch over.
        if getattr(message.delivery, "consumer_tag", None) != self._tag:
            return
        self._inbox.on_delivery(message)

    def _on_cancelled(self, frame: aiormq.spec.Basic.Cancel) -> None:
        if frame.consumer_tag == self._tag and self._underlay is not None:
            self._lost("consumer cancelled by the broker", stream_gone=True)

    def _on_closed(self, channel: aiormq.abc.AbstractChannel, why: str) -> None:
        if channel is self._underlay:
            self._lost(why, stream_gone=False)

    def _on_stream_lost(self, why: str, stream_changed: bool) -> None:
        # Deleted, or moved: the supervisor declares it again (a no-op if it exists).
        self._lost(why, stream_gone=stream_changed)

    def _lost(self, why: str, *, stream_gone: bool) -> None:
        self._tag = None
        self._on_lost(why, stream_gone)


def _warm_offset(warm_seconds: float) -> str:
    if warm_seconds <= 0:
        return "next"
    return f"{math.ceil(warm_seconds)}s"
