"""One-off operations on throw-away channels that nothing restores after a reconnect.

A failed AMQP operation closes its channel, and a robust channel would reopen it and
repeat the operation in a loop; checks, short reads of the stream and the epoch lock
therefore each take a plain aiormq channel of their own and close it afterwards:

- :class:`Probe` runs one operation (a passive declare, a check) on its own channel;
- :class:`StreamReader` reads the stream from an offset until a condition holds, and
  takes a broker-side lock (an exclusive queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiormq.abc
from aio_pika.abc import AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelLockedResource, ChannelNotFoundEntity

from tidings.log.broker import StreamLost
from tidings.log.message import StreamMessage, from_delivery

__all__ = ["Probe", "StreamReader", "close_quietly"]

_T = TypeVar("_T")


class Probe:
    """Runs one operation on a throw-away channel: an error closes only that channel."""

    def __init__(self, connection: AbstractRobustConnection, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout

    async def channel(self) -> aiormq.abc.AbstractChannel:
        """A new plain channel of the connection, once it is connected."""
        async with asyncio.timeout(self._timeout):
            await self._connection.ready()
            transport = self._connection.transport
            if transport is None:
                raise ConnectionError("not connected to RabbitMQ")
            return await transport.connection.channel(publisher_confirms=False)

    async def run(self, op: Callable[[aiormq.abc.AbstractChannel], Awaitable[_T]]) -> _T:
        """Runs ``op`` on a channel of its own, closed afterwards."""
        channel = await self.channel()
        try:
            async with asyncio.timeout(self._timeout):
                return await op(channel)
        finally:
            await close_quietly(channel)

    async def exists(self, op: Callable[[aiormq.abc.AbstractChannel], Awaitable[Any]]) -> bool:
        """Runs a passive declare; False when the broker answers NOT_FOUND."""
        try:
            await self.run(op)
        except ChannelNotFoundEntity:
            return False
        return True


async def close_quietly(channel: aiormq.abc.AbstractChannel) -> None:
    """Closes a channel that may be closed or broken already."""
    if not channel.is_closed:
        with contextlib.suppress(Exception):
            await channel.close()


class StreamReader:
    """Short reads of the stream and a broker-side lock, on channels nothing restores.

    Args:
        connection: the log's robust connection.
        stream: the stream queue's name.
        prefetch: messages in flight per read.
        timeout: seconds to wait for any broker reply.
    """

    def __init__(
        self, connection: AbstractRobustConnection, stream: str, prefetch: int, timeout: float
    ) -> None:
        self._probe = Probe(connection, timeout)
        self._stream = stream
        self._prefetch = prefetch
        self._timeout = timeout

    async def read(self, offset: int | str, step: Callable[[int, StreamMessage], _T | None]) -> _T:
        """Reads from ``offset`` until ``step(offset, message)`` answers; returns its answer.

        Raises:
            StreamLost: the channel closed before ``step`` answered.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_T] = loop.create_future()
        channel = await self._probe.channel()
        batch = max(1, self._prefetch // 2)
        unacked = 0

        async def on_message(message: DeliveredMessage) -> None:
            nonlocal unacked
            if done.done():
                return
            read = from_delivery(message)
            if read is not None:
                answer = step(read.offset, read)
                if answer is not None:
                    done.set_result(answer)
                    return
            unacked += 1
            if unacked >= batch:  # acknowledgements are the stream's flow control
                unacked = 0
                with contextlib.suppress(Exception):
                    await channel.basic_ack(message.delivery_tag or 0, multiple=True)

        try:
            await channel.basic_qos(prefetch_count=self._prefetch, timeout=self._timeout)
            await channel.basic_consume(
                self._stream,
                on_message,
                arguments={"x-stream-offset": offset},
                timeout=self._timeout,
            )
            closing = channel.closing
            await asyncio.wait((done, closing), return_when=asyncio.FIRST_COMPLETED)
            closing.cancel()
            if not done.done():
                raise StreamLost("the channel closed while reading the stream")
            return done.result()
        finally:
            done.cancel()
            await close_quietly(channel)

    async def tail(self) -> int:
        """The first offset of the stream's last chunk: a lower bound of its tail."""
        return await self.read("last", lambda offset, _message: offset)

    async def acquire(self, name: str) -> aiormq.abc.AbstractChannel:
        """Takes the lock ``name``: an exclusive queue, held by one connection at a time
        and dropped by the broker if that connection dies. Give the channel to
        :meth:`release`.

        Raises:
            TimeoutError: another connection held it for longer than the timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            channel = await self._probe.channel()
            try:
                await channel.queue_declare(
                    name, exclusive=True, auto_delete=True, timeout=self._timeout
                )
                return channel
            except ChannelLockedResource:
                if loop.time() >= deadline:
                    raise TimeoutError(f"another node holds {name!r}") from None
            except BaseException:
                await close_quietly(channel)
                raise
            await asyncio.sleep(random.uniform(0.05, 0.2))

    async def release(self, channel: aiormq.abc.AbstractChannel, name: str) -> None:
        """Drops the lock taken by :meth:`acquire`."""
        with contextlib.suppress(Exception):
            await channel.queue_delete(name, timeout=self._timeout)
        await close_quietly(channel)
