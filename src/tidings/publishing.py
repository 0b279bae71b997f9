"""Publishing through the log: the server API's and the CLI's publications, and clients'.

Every publication is appended to the log, with its channels in ``x-tidings-channel``, and
reaches subscribers the way every event does, so it has a position, history and recovery
on every node. A client's carries its publisher's ClientInfo in ``x-tidings-info``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import orjson

from tidings.channels import channel_problem
from tidings.codes import ErrorCode
from tidings.config import ChannelOptions, Settings
from tidings.log.base import Log
from tidings.protocol import operations
from tidings.protocol.operations import Outcome, PublishCall, Published
from tidings.router import CHANNEL_HEADER, INFO_HEADER, encode_channel_header

__all__ = ["PublishError", "Publishing"]

log = logging.getLogger(__name__)


class PublishError(ValueError):
    """A publish request from the server API or the CLI is invalid."""


class Publishing:
    """Appends publications to the log.

    Args:
        settings: the settings (``amqp.publish_routing_key``, ``amqp.max_message_bytes``).
        event_log: the log appended to.
        options: a channel's namespace options, None for an invalid name or unknown one.
    """

    def __init__(
        self,
        settings: Settings,
        event_log: Log,
        options: Callable[[str], ChannelOptions | None],
    ) -> None:
        self._routing_key = settings.amqp.publish_routing_key
        self._limit = settings.amqp.max_message_bytes
        self._log = event_log
        self._options = options

    async def publish(self, channels: Sequence[str], data: object) -> None:
        """Publishes ``data`` to ``channels``.

        Raises:
            PublishError: a channel name is invalid or its namespace unknown.
        """
        if not channels:
            raise PublishError("at least one channel is required")
        for channel in channels:
            problem = channel_problem(channel)
            if problem is not None:
                raise PublishError(f"invalid channel: {problem}")
            if self._options(channel) is None:
                raise PublishError(f"unknown namespace of channel {channel!r}")
        body = orjson.dumps(data)
        self._check_size(body)
        await self._log.append(
            self._routing_key, body, {CHANNEL_HEADER: encode_channel_header(channels)}
        )

    def _check_size(self, body: bytes) -> None:
        limit = self._limit
        if len(body) > limit:
            raise PublishError(
                f"data of {len(body)} bytes is over the {limit} limit (amqp.max_message_bytes)"
            )

    async def append(self, call: PublishCall) -> Outcome:
        """Appends a client's publication to the log, with the publisher in ``info``.

        Returns:
            Published once the log took it; 106 when the data is over
            ``amqp.max_message_bytes``; 100 (temporary) when the log refused it.
        """
        try:
            self._check_size(call.data)
        except PublishError as exc:
            return operations.Rejected(int(ErrorCode.LIMIT_EXCEEDED), str(exc))
        headers = {
            CHANNEL_HEADER: encode_channel_header([call.channel]),
            INFO_HEADER: call.info.decode(),
        }
        try:
            await self._log.append(self._routing_key, call.data, headers)
        except Exception as exc:  # the log is down: the client retries, nothing is lost
            log.warning("client publication to %r failed: %s", call.channel, exc)
            return operations.Rejected(
                int(ErrorCode.INTERNAL), "the log did not take the publication", True
            )
        return Published()
