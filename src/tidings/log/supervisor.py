"""Keeping the stream's consumer attached: at start-up, and again after every loss.

*Start-up.* Records flow during the start-up read, before the epoch is known: nobody is
served before :meth:`~tidings.log.rabbitmq.RabbitMqLog.start` returns, and the epoch is
learnt on the way, from a beacon in the warm window (:mod:`tidings.log.epoch`).

*Resume.* When the channel or the connection drops, ``ready`` turns false, aio-pika
reconnects and restores the channel, QoS, exchange, queue and bindings, and the node
re-attaches at the offset after the last one it read (control messages included),
dropping anything at or below it. Its deliveries wait until the stream is known to be the
same: the stream's last chunk, written after the node's marker, must start beyond what the
node read (else offsets went backwards), and the message at the last offset read must be
the one read there (a fingerprint: body, routing key, headers, timestamp). Two small reads
instead of a scan. A stream deleted while the node reads it cancels the consumer
(``basic.cancel``): the node declares it again and resumes the same way. Another stream
gets a new epoch (scanned for, or minted), announced by ``on_epoch`` before any of its
records, which are then read from the warm window as at start-up. Only if retention
dropped the last offset read do the beacons decide. Clients stay connected throughout.

*Failures.* At start-up a refused permission ends :meth:`Supervisor.run` with a
:class:`~tidings.log.broker.SourceError`; other channel errors get a few attempts (a stream
just declared may refuse consumers for a moment); a lost connection is waited out. Once
started, losing the broker is never fatal: the supervisor retries, logging what it waits
for now and then.
"""

from __future__ import annotations

import asyncio
import logging

import aiormq
from aiormq.exceptions import ChannelAccessRefused

from tidings.config import AmqpSettings
from tidings.log.broker import SourceError, StreamLost, describe
from tidings.log.control import Marker
from tidings.log.epoch import EpochKeeper
from tidings.log.inbox import Inbox
from tidings.log.message import fingerprint
from tidings.log.probe import StreamReader
from tidings.log.tail import Tail
from tidings.log.topology import Topology, declare_stream_again

__all__ = ["Supervisor"]

# While the stream cannot be attached, say so again at most this often (seconds).
_RETRY_LOG_INTERVAL = 30.0
# Channel errors (not a lost connection) that start-up retries before giving up.
_START_ATTEMPTS = 10


class Supervisor:
    """Attaches the consumer at start-up and whenever it was lost.

    Args:
        settings: the ``[amqp]`` settings.
        topology: what was declared; its consume channel carries the AMQP 0-9-1 consumer.
        reader: short reads, to check that the stream is the one read before.
        tail: the consumer.
        inbox: what the consumer read, and the position.
        epochs: the stream's epoch.
        started: resolved when the first attach succeeded, or failed for good.
        warm_seconds: the warm-up window at start-up and after a new epoch.
        reconnect_interval: seconds between attempts.
        timeout: seconds to wait for any broker reply.
        logger: where to log.

    Attributes:
        ready: True while attached and caught up with the stream.
    """

    def __init__(
        self,
        settings: AmqpSettings,
        topology: Topology,
        reader: StreamReader,
        tail: Tail,
        inbox: Inbox,
        epochs: EpochKeeper,
        started: asyncio.Future[None],
        *,
        warm_seconds: float,
        reconnect_interval: float,
        timeout: float,
        logger: logging.Logger,
    ) -> None:
        self._settings = settings
        self._topology = topology
        self._reader = reader
        self._tail = tail
        self._inbox = inbox
        self._epochs = epochs
        self._started = started
        self._warm_seconds = warm_seconds
        self._reconnect_interval = reconnect_interval
        self._timeout = timeout
        self._log = logger
        self.ready = False
        self._need_attach = asyncio.Event()
        self._need_attach.set()
        self._lost: asyncio.Future[None] | None = None
        self._queue_lost = False

    def lost(self, why: str, stream_gone: bool) -> None:
        """The consumer was lost; with ``stream_gone`` the stream is declared again."""
        if stream_gone:
            self._queue_lost = True
        if self.ready:
            self._log.warning("stream %r: %s; clients stay connected", self._settings.stream, why)
        self.ready = False
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self._need_attach.set()

    async def run(self) -> None:
        """Attaches whenever needed, until cancelled."""
        loop = asyncio.get_running_loop()
        failures, warned_at = 0, -_RETRY_LOG_INTERVAL
        while True:
            await self._need_attach.wait()
            self._need_attach.clear()
            try:
                await self._attach()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.ready = False
                failures += 1
                if not self._started.done() and _fatal_at_start(exc, failures):
                    self._started.set_exception(
                        exc
                        if isinstance(exc, SourceError)
                        else SourceError(
                            f"cannot read stream {self._settings.stream!r}: {describe(exc)}"
                        )
                    )
                    return
                # aio-pika logs each reconnection attempt already; one line now and then.
                quiet = loop.time() - warned_at < _RETRY_LOG_INTERVAL
                warned_at = warned_at if quiet else loop.time()
                self._log.log(
                    logging.DEBUG if quiet else logging.WARNING,
                    "stream %r not attached (%s); retrying (attempt %d)",
                    self._settings.stream,
                    describe(exc),
                    failures,
                )
                self._need_attach.set()
                await asyncio.sleep(self._reconnect_interval)
            else:
                if failures:
                    self._log.info(
                        "stream %r resumed after position %d",
                        self._settings.stream,
                        self._inbox.consumed + 1,
                    )
                failures, warned_at = 0, -_RETRY_LOG_INTERVAL
                if not self._started.done():
                    self._started.set_result(None)

    async def _attach(self) -> None:
        """(Re)starts the consumer; returns once it caught up with the tail and knows the
        epoch.

        Raises:
            StreamLost: the channel or the stream went away meanwhile.
        """
        topology, tail, inbox, epochs = self._topology, self._tail, self._inbox, self._epochs
        self.ready = False
        self._lost = asyncio.get_running_loop().create_future()
        inbox.hold()
        await tail.cancel()
        await topology.consume.ready()
        if self._queue_lost:
            # A deleted stream, or in a cluster most often one whose leader moved: declaring
            # it changes nothing then.
            self._log.warning(
                "stream %r was deleted or moved; declaring it again", self._settings.stream
            )
            await declare_stream_again(topology, self._settings, op_timeout=self._timeout)
            self._queue_lost = False
        channel = await topology.consume.get_underlay_channel()

        if inbox.consumed < 0:
            # Start-up: nobody is served before start() returns, so records flow at once
            # and the epoch is learnt on the way, from a beacon in the warm window.
            marker = await tail.start_warm(channel, self._warm_seconds)
            await self._catch_up(marker)
            await epochs.learn(marker, self._warm_seconds)
            await tail.hand_over(channel)
            self.ready = True
            return

        # Resuming: deliveries wait until the stream is known to be the same one.
        await tail.consume(channel, inbox.consumed + 1)
        marker = await epochs.mark()
        same = await self._same_stream()
        if same is None and epochs.epoch is not None:
            # The last message read is gone (retention): only the beacons can tell.
            same = await epochs.discover(marker, None) == epochs.epoch
            if same:
                self._log.warning(
                    "stream %r: retention dropped offsets this node had not read yet; "
                    "resuming after a gap",
                    self._settings.stream,
                )
        if same is not False:
            await self._catch_up(marker)
            await epochs.learn(marker, self._warm_seconds)
            self.ready = True
            return

        # Another stream under the same name: a new epoch, announced before its records.
        old = epochs.epoch
        await tail.cancel()
        inbox.drop()
        epoch = await epochs.discover(marker, old)
        self._log.warning(
            "stream %r was recreated: epoch %s -> %s, history restarts",
            self._settings.stream,
            old,
            epoch,
        )
        epochs.epoch = epoch
        inbox.restart(epoch)
        await self._catch_up(await tail.start_warm(channel, self._warm_seconds))
        await tail.hand_over(channel)
        self.ready = True

    async def _catch_up(self, marker: Marker) -> None:
        """Lets deliveries flow and waits until the consumer read ``marker``."""
        assert self._lost is not None
        caught_up = self._inbox.catch_up(marker)
        await asyncio.wait((caught_up, self._lost), return_when=asyncio.FIRST_COMPLETED)
        if not caught_up.done():
            raise StreamLost("the consumer was lost while catching up")

    async def _same_stream(self) -> bool | None:
        """Whether the stream is the one this node read up to its position.

        False when it is shorter (the last chunk, written after this node's marker, starts
        at or below the last offset read: offsets went backwards) or holds another message
        at that offset; None when retention dropped that offset.
        """
        consumed = self._inbox.consumed
        tail = await self._reader.tail()
        if tail <= consumed:
            self._log.warning(
                "stream %r went backwards (tail at offset %d, read up to %d)",
                self._settings.stream,
                tail,
                consumed,
            )
            return False
        offset, print_ = await self._reader.read(
            consumed, lambda offset, message: (offset, fingerprint(message))
        )
        if offset != consumed:
            return None
        if print_ != self._inbox.last_print:
            self._log.warning(
                "stream %r holds another message at offset %d than this node read there",
                self._settings.stream,
                offset,
            )
            return False
        return True


def _fatal_at_start(exc: BaseException, failures: int) -> bool:
    """Whether start-up gives up after this error instead of retrying.

    A refused permission does not fix itself. A stream that was just declared may refuse
    consumers for a moment ("does not have a replica on the local node", INTERNAL_ERROR),
    so other channel errors get a few attempts. A lost connection is waited out.
    """
    if isinstance(exc, SourceError | ChannelAccessRefused):
        return True
    if isinstance(exc, aiormq.exceptions.AMQPChannelError):
        return failures >= _START_ATTEMPTS
    return False
