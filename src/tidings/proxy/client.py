"""Sends proxy requests to the application's backend and turns every answer into an outcome.

One :class:`aiohttp.ClientSession` per process, made on first use and kept open (its
keep-alive connections are reused by every request). :meth:`ProxyClient.perform` never
raises and never waits longer than the event's timeout: a timeout, a refused or reset
connection, a status other than 200, an answer over :data:`MAX_ANSWER_BYTES` or one the
proxy protocol does not define is logged and becomes :data:`~tidings.protocol.operations.INTERNAL`
(error 100, temporary). A refresh that fails that way is asked again after
``proxy.refresh_retry``, as Centrifugo does, instead of ending a connection for a blip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from tidings.config import ProxySettings
from tidings.metrics import Metrics
from tidings.protocol.operations import (
    INTERNAL,
    Connected,
    Disconnected,
    Operation,
    Outcome,
    Peer,
    RefreshCall,
    Refreshed,
    Rejected,
)
from tidings.proxy.wire import BadAnswer, decode_answer, encode_request, event_of

__all__ = ["MAX_ANSWER_BYTES", "ProxyClient"]

log = logging.getLogger(__name__)

#: The largest answer read from the backend; a longer one is a bad answer.
MAX_ANSWER_BYTES = 1 << 20


class ProxyClient:
    """The backend as the node sees it.

    Args:
        settings: the endpoints, timeouts, forwarded headers and RPC methods.
        metrics: where requests are counted, by event and result.
        clock: Unix time, for the retry time of a failed refresh.
    """

    def __init__(
        self,
        settings: ProxySettings,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._metrics = metrics
        self._clock = clock
        self._http: aiohttp.ClientSession | None = None
        self._methods = frozenset(settings.rpc_methods)

    def enabled(self, event: str, method: str | None = None) -> bool:
        """Whether ``event`` (``connect``, ``refresh``, ``subscribe``, ``rpc``, ``publish``)
        has an endpoint; for ``rpc`` with a ``method``, whether that method is forwarded."""
        if getattr(self.settings, f"{event}_endpoint", None) is None:
            return False
        return method is None or not self._methods or method in self._methods

    async def perform(self, operation: Operation, peer: Peer) -> Outcome:
        """Asks the backend; returns its verdict, or INTERNAL (or a refresh retry) when it
        could not be had."""
        event = event_of(operation)
        outcome = await self._ask(event, operation, peer)
        self._metrics.proxy_requests.labels(event, _result(outcome)).inc()
        if isinstance(operation, RefreshCall) and isinstance(outcome, Rejected):
            retry = self.settings.refresh_retry
            return Refreshed(expire_at=int(self._clock() + retry))
        return outcome

    async def _ask(self, event: str, operation: Operation, peer: Peer) -> Outcome:
        url = getattr(self.settings, f"{event}_endpoint")
        timeout = getattr(self.settings, f"{event}_timeout")
        if url is None:
            log.warning("%s proxy asked but proxy.%s_endpoint is not set", event, event)
            return INTERNAL
        body = encode_request(operation, peer)
        headers = dict(peer.headers)
        headers["Content-Type"] = "application/json"
        forwarded = headers.pop("x-forwarded-for", "")
        if peer.ip:
            forwarded = f"{forwarded}, {peer.ip}" if forwarded else peer.ip
        if forwarded:
            headers["X-Forwarded-For"] = forwarded
        try:
            async with asyncio.timeout(timeout):
                async with self._session().post(url, data=body, headers=headers) as response:
                    if response.status != 200:
                        log.warning("%s proxy %s answered HTTP %d", event, url, response.status)
                        return INTERNAL
                    answer = await _read(response)
            return decode_answer(operation, answer)
        except TimeoutError:
            log.warning("%s proxy %s did not answer within %.3gs", event, url, timeout)
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("%s proxy %s failed: %s", event, url, exc or type(exc).__name__)
        except BadAnswer as exc:
            log.warning("%s proxy %s gave a bad answer: %s", event, url, exc)
        return INTERNAL

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                # The backend is the application's own service: no cookies of its own kept
                # between clients, no proxy from the environment.
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0),
                auto_decompress=True,
            )
        return self._http

    async def close(self) -> None:
        """Closes the HTTP session and its kept-alive connections."""
        if self._http is not None:
            await self._http.close()
            self._http = None


async def _read(response: aiohttp.ClientResponse) -> bytes:
    """The body, refused past MAX_ANSWER_BYTES without reading further."""
    if (response.content_length or 0) > MAX_ANSWER_BYTES:
        raise BadAnswer(f"answer over {MAX_ANSWER_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise BadAnswer(f"answer over {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _result(outcome: Outcome) -> str:
    """The metric label of an outcome."""
    if outcome is INTERNAL:
        return "failed"
    if isinstance(outcome, Rejected):
        return "error"
    if isinstance(outcome, Disconnected):
        return "disconnect"
    if isinstance(outcome, Connected) and not outcome.user:
        return "anonymous"
    return "ok"
