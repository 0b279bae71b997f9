"""Helpers of the socket-level tests: secrets, tokens, scaled time, a live node, a raw client.

Every wait in these tests goes through :func:`scaled`, so a slow machine (or CI under
load) can stretch them all at once with ``TIDINGS_TEST_TIME_SCALE=3``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tidings.appkeys import NODE
from tidings.auth import mint_token
from tidings.config import Settings, load_settings
from tidings.node import Node
from tidings.server import create_app
from tidings.transport.front import start_site

SECRET = "integration-test-secret-0123456789abcdef"
API_KEY = "integration-api-key-0123"
#: Multiplies every wait and timeout of the socket-level tests.
TIME_SCALE = float(os.environ.get("TIDINGS_TEST_TIME_SCALE", "1"))
ROOT = Path(__file__).resolve().parents[2]
#: The ``tidings`` console script of the interpreter running the tests.
TIDINGS = Path(sys.executable).with_name("tidings")


def scaled(seconds: float) -> float:
    """``seconds`` stretched by the suite's time scale."""
    return seconds * TIME_SCALE


def token(user: str = "alice", **kwargs: Any) -> str:
    """A connection (or, with ``channel=``, subscription) token signed with ``SECRET``."""
    return mint_token(SECRET, user, **kwargs)


def free_port() -> int:
    """A TCP port that was free a moment ago (for subprocesses that need a fixed one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a ``tidings`` subprocess: ours without any ``TIDINGS_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(extra)
    return env


def make_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    toml: str | None = None,
    tmp_path: Path | None = None,
    api_key: str | None = API_KEY,
) -> Settings:
    """Settings through the real loader: ``SECRET``, ``API_KEY`` and dotted ``overrides``."""
    values: dict[str, Any] = {"auth.hmac_secret": SECRET}
    if api_key is not None:
        values["api.key"] = api_key
    values.update(overrides or {})
    path = None
    if toml is not None:
        assert tmp_path is not None, "a TOML config needs tmp_path"
        path = tmp_path / "tidings.toml"
        path.write_text(toml, encoding="utf-8")
    return load_settings(path, {}, values)


@dataclasses.dataclass
class LiveServer:
    """A node served by aiohttp on an ephemeral port of 127.0.0.1."""

    app: web.Application
    runner: web.AppRunner
    site: asyncio.Server
    port: int
    http: aiohttp.ClientSession
    stopped: bool = False

    @property
    def node(self) -> Node:
        node: Node = self.app[NODE]
        return node

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """The real shutdown sequence (stop listening, drain with 3001, clean up)."""
        if not self.stopped:
            self.stopped = True
            self.site.close()
            await self.runner.cleanup()

    async def api(
        self, method: str, body: Any = None, *, key: str | None = API_KEY, raw: bytes | None = None
    ) -> tuple[int, Any]:
        """POSTs to ``/api/<method>``; returns the status and the decoded JSON body."""
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["X-API-Key"] = key
        data = raw if raw is not None else orjson.dumps(body)
        async with self.http.post(f"{self.url}/api/{method}", data=data, headers=headers) as r:
            assert r.content_type == "application/json"
            return r.status, await r.json()

    async def publish(self, channel: str, data: Any) -> None:
        """Publishes through the server API and checks that it was accepted."""
        status, body = await self.api("publish", {"channel": channel, "data": data})
        assert (status, body) == (200, {"result": {}}), body

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``/metrics`` parsed: (sample name, sorted labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        async with self.http.get(f"{self.url}/metrics") as r:
            assert r.status == 200
            assert r.content_type == "text/plain"
            text = await r.text()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def listening_socket() -> socket.socket:
    """A listening socket on an ephemeral port of 127.0.0.1."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def start_server(settings: Settings, http: aiohttp.ClientSession) -> LiveServer:
    """Builds the app with ``create_app`` and serves it on port 0 as ``tidings serve`` does
    (through ``start_site``)."""
    app = create_app(settings, name="test-node")
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=scaled(2))
    await runner.setup()
    sock = listening_socket()
    port = int(sock.getsockname()[1])
    site = await start_site(runner, sock)
    return LiveServer(app, runner, site, port, http)


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "it") -> None:
    """Polls ``predicate()`` until true, failing after ``scaled(timeout)`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(timeout)
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class WsClient:
    """A raw protocol client over aiohttp's WebSocket: send commands, read frames as lines."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, *commands: Any) -> None:
        """Sends ``commands`` in one frame, newline-joined (as the SDK does)."""
        await self.ws.send_str("\n".join(orjson.dumps(c).decode() for c in commands))

    async def frame(self, timeout: float = 2.0) -> list[Any]:
        """The messages of the next text frame, in order."""
        msg = await self.ws.receive(timeout=scaled(timeout))
        assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg}"
        lines = msg.data.split("\n")
        assert all(lines), f"blank line in frame {msg.data!r}"
        return [orjson.loads(line) for line in lines]

    async def message(self, timeout: float = 2.0) -> Any:
        """The next frame, which must hold exactly one message."""
        messages = await self.frame(timeout)
        assert len(messages) == 1, messages
        return messages[0]

    async def reply(self, command_id: int, timeout: float = 2.0) -> Any:
        """The reply to command ``command_id``, skipping server pings (``{}``) before it."""
        while True:
            for message in await self.frame(timeout):
                if message == {}:
                    continue
                assert message.get("id") == command_id, message
                return message

    async def closed(self, timeout: float = 2.0) -> tuple[int | None, str]:
        """Waits for the server's close frame; returns its code and reason."""
        while True:
            msg = await self.ws.receive(timeout=scaled(timeout))
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return self.ws.close_code, msg.extra or ""
            assert msg.type is aiohttp.WSMsgType.TEXT, f"unexpected {msg}"

    async def close_code(self, timeout: float = 2.0) -> int | None:
        """Waits for the server's close frame; returns its code after checking the reason.

        The reason must be plain text within 123 bytes: the SDK parses a JSON reason as
        legacy advice that overrides the code.
        """
        code, reason = await self.closed(timeout)
        assert len(reason.encode()) <= 123, reason
        try:
            orjson.loads(reason)
        except orjson.JSONDecodeError:
            pass
        else:
            raise AssertionError(f"close reason {reason!r} is JSON")
        return code

    async def silent(self, seconds: float = 0.2) -> None:
        """Asserts that nothing arrives for ``scaled(seconds)``."""
        try:
            msg = await self.ws.receive(timeout=scaled(seconds))
        except TimeoutError:
            return
        raise AssertionError(f"expected silence, got {msg}")


async def open_ws(
    server: LiveServer, path: str = "/connection/websocket", **kwargs: Any
) -> WsClient:
    """Opens a WebSocket to ``server`` (closed with the test's client session)."""
    ws = await server.http.ws_connect(f"ws://127.0.0.1:{server.port}{path}", **kwargs)
    return WsClient(ws)


async def connected(
    server: LiveServer, user: str = "alice", *, subscribe: tuple[str, ...] = (), **claims: Any
) -> tuple[WsClient, dict[str, Any]]:
    """A client that sent connect (and ``subscribe`` commands in the same frame).

    Returns:
        The client and its connect result.
    """
    client = await open_ws(server)
    commands: list[Any] = [{"id": 1, "connect": {"token": token(user, **claims), "name": "test"}}]
    commands += [{"id": 2 + i, "subscribe": {"channel": ch}} for i, ch in enumerate(subscribe)]
    await client.send(*commands)
    replies = await client.frame()
    assert [r.get("id") for r in replies] == list(range(1, len(commands) + 1)), replies
    for reply in replies:
        assert "error" not in reply, reply
    result: dict[str, Any] = replies[0]["connect"]
    return client, result


class ServeProcess:
    """``tidings serve`` as a subprocess on a free port, its log kept in a file.

    Use as a context manager; ``stop()`` sends SIGTERM and returns the exit status.
    """

    def __init__(
        self, log_path: Path, env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.env = subprocess_env(
            TIDINGS_AUTH_HMAC_SECRET=SECRET, TIDINGS_API_KEY=API_KEY, **dict(env or {})
        )
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def log(self) -> str:
        """What the process wrote to stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> ServeProcess:
        if self.proc is None:
            self.start()
        return self

    def start(self) -> None:
        """Starts the process and waits until ``/readyz`` answers 200."""
        assert self.proc is None, "already started"
        command = [str(TIDINGS), "serve", "--port", str(self.port), *self.args]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        deadline = time.monotonic() + scaled(10)
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"tidings serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"tidings serve did not become ready:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then the exit status (killed, and failing, after ``timeout``)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"tidings serve ignored SIGTERM:\n{self.log()}") from None

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
