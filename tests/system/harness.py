"""Tools of the system tests: tidings processes, a protocol client, a cuttable TCP proxy,
and a pika publisher. Every wait is bounded and scaled by ``TIME_SCALE``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pika

from tests.integration.live import free_port
from tidings.auth import mint_token

#: Multiplies every timeout of the system tests; raise it on a slow machine.
TIME_SCALE = float(os.environ.get("TIDINGS_TEST_TIME_SCALE", "1"))
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
SECRET = "system-test-secret-0123456789abcdef"
API_KEY = "system-test-api-key-0123"
TIDINGS = str(Path(sys.executable).with_name("tidings"))


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


@dataclass
class Node:
    """A ``tidings serve`` subprocess."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout * TIME_SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_node(
    tmp_path: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    config: str | None = None,
    wait_ready: bool = True,
    port: int | None = None,
    secret: str | None = SECRET,
    api_key: str | None = API_KEY,
) -> Node:
    """Starts ``tidings serve`` with the test secret and API key; waits for ``/readyz``.

    ``secret=None`` or ``api_key=None`` leaves that setting unset (a node that verifies
    tokens with a public key only, or one without the server API).
    """
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")} | {
        "TIDINGS_CLIENT_CONNECTIONS_PER_IP_PER_SECOND": "0",
        "TIDINGS_CLIENT_MAX_CONNECTIONS_PER_USER": "0",
    }
    if secret is not None:
        full_env["TIDINGS_AUTH_HMAC_SECRET"] = secret
    if api_key is not None:
        full_env["TIDINGS_API_KEY"] = api_key
    full_env |= dict(env or {})
    cmd = [TIDINGS, "serve", "--port", str(port), *args]
    if config is not None:
        path = tmp_path / f"tidings-{port}.toml"
        path.write_text(config)
        cmd += ["--config", str(path)]
    log_path = tmp_path / f"tidings-{port}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    node = Node(port, proc, log_path)
    if wait_ready:
        try:
            wait_until_ready(node)
        except BaseException:
            node.stop()  # never left running behind a failed test
            raise
    return node


def wait_until_ready(node: Node, timeout: float = 30.0) -> None:
    """Blocks until ``/readyz`` answers 200, or fails with the node's log."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout * TIME_SCALE
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            raise AssertionError(f"tidings exited with {node.proc.returncode}:\n{node.log_text()}")
        try:
            with urllib.request.urlopen(node.url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"tidings not ready in time:\n{node.log_text()}")


@contextlib.contextmanager
def nodes(tmp_path: Path, count: int, *args: str, **kwargs: Any) -> Iterator[list[Node]]:
    """``count`` nodes with the same arguments, stopped afterwards."""
    started: list[Node] = []
    try:
        for _ in range(count):
            started.append(start_node(tmp_path, *args, **kwargs))
        yield started
    finally:
        for node in started:
            node.stop()


@dataclass
class Client:
    """A minimal protocol client over aiohttp: connect, subscribe, collect publications."""

    url: str
    user: str
    channels: list[str] = field(default_factory=list)
    token_channels: list[str] = field(default_factory=list)
    pubs: list[tuple[str, int, Any]] = field(default_factory=list)
    replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    close_code: int | None = None
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _task: asyncio.Task[None] | None = None
    _session: aiohttp.ClientSession | None = None

    async def start(self, timeout: float = 10.0) -> None:
        """Connects and subscribes; returns once every reply arrived."""
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url, autoping=True)
        token = mint_token(SECRET, self.user, ttl=3600, channels=self.token_channels)
        lines = [orjson.dumps({"id": 1, "connect": {"token": token}})]
        for i, channel in enumerate(self.channels, start=2):
            lines.append(orjson.dumps({"id": i, "subscribe": {"channel": channel}}))
        await self._ws.send_bytes(b"\n".join(lines))
        self._task = asyncio.get_running_loop().create_task(self._read())
        deadline = time.monotonic() + timeout * TIME_SCALE
        while len(self.replies) < len(lines):
            if time.monotonic() > deadline or self._task.done():
                raise AssertionError(f"no replies: {self.replies}, close {self.close_code}")
            await asyncio.sleep(0.01)
        for reply in self.replies.values():
            assert "error" not in reply, reply

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                break
            data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
            for line in data.split(b"\n"):
                obj = orjson.loads(line)
                if not obj:
                    await self._ws.send_str("{}")  # pong
                elif "push" in obj:
                    push = obj["push"]
                    pub = push.get("pub")
                    if pub is not None:
                        self.pubs.append((push["channel"], pub["offset"], pub["data"]))
                elif "id" in obj:
                    self.replies[obj["id"]] = obj
        self.close_code = self._ws.close_code

    async def wait_for(self, count: int, timeout: float = 20.0) -> None:
        """Waits until ``count`` publications arrived."""
        deadline = time.monotonic() + timeout * TIME_SCALE
        while len(self.pubs) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
        if self._session is not None:
            await self._session.close()


class Publisher:
    """Publishes JSON events to an exchange with pika, with publisher confirms."""

    def __init__(self, exchange: str, url: str = AMQP_URL, declare: bool = True) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.exchange = exchange
        if declare:
            self.channel.exchange_declare(exchange, "topic", durable=True)

    def publish(
        self,
        routing_key: str,
        body: Any,
        headers: dict[str, Any] | None = None,
        raw: bytes | None = None,
    ) -> None:
        self.channel.basic_publish(
            self.exchange,
            routing_key,
            raw if raw is not None else orjson.dumps(body),
            pika.BasicProperties(headers=headers or {}, delivery_mode=2),
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


class AppNames:
    """Unique names of one test's exchange and stream, and of the events exchange its nodes
    send the application's events to (``amqp.events_exchange``)."""

    def __init__(self) -> None:
        self.exchange, self.stream = unique("test.events"), unique("test.log")
        self.events = unique("test.app-events")

    def delete(self) -> None:
        """Deletes the exchanges (the control one too) and the stream."""
        delete_amqp([self.exchange, self.exchange + ".control", self.events], [self.stream])


def delete_amqp(exchanges: list[str] = (), queues: list[str] = ()) -> None:  # type: ignore[assignment]
    """Removes what a test declared, and the ledger's stream beside each stream queue
    (``<stream>.state``, which a node declares)."""
    with contextlib.suppress(Exception):
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        ch = conn.channel()
        for q in [*queues, *(f"{q}.state" for q in queues if not q.endswith(".state"))]:
            with contextlib.suppress(Exception):
                ch.queue_delete(q)
        for x in exchanges:
            with contextlib.suppress(Exception):
                ch.exchange_delete(x)
        conn.close()


class CutProxy:
    """A TCP proxy to RabbitMQ whose live connections the test can cut at will."""

    def __init__(self, target_port: int = 5672) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.refusing = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._links.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
                self._links.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def linked(self, timeout: float = 30.0) -> None:
        """Waits until some connection goes through the proxy (the node reconnected)."""
        deadline = time.monotonic() + timeout * TIME_SCALE
        while not self._links:
            if time.monotonic() > deadline:
                raise AssertionError("nothing reconnected through the proxy")
            await asyncio.sleep(0.01)

    def cut(self) -> int:
        """Aborts every proxied connection; returns how many sockets were cut."""
        n = len(self._links)
        for w in list(self._links):
            w.transport.abort()
        self._links.clear()
        return n

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# --------------------------------------------------------------------------------------
# Additions for the security and fault suites (tests/security, tests/faults).
# --------------------------------------------------------------------------------------


def scaled(seconds: float) -> float:
    """``seconds`` stretched by ``TIME_SCALE``."""
    return seconds * TIME_SCALE


def metrics_of(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The node's ``/metrics`` parsed: (sample name, sorted labels) -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(node.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def rabbitmqctl(*args: str, timeout: float = 120.0) -> str:
    """Runs ``rabbitmqctl`` and returns its output; fails the test on a non-zero exit."""
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@dataclass
class RecoveringClient:
    """A protocol client on one channel that reconnects, and recovers, like the SDK does.

    On every (re)connect it subscribes with ``recover: true`` and the ``offset`` and
    ``epoch`` of the last publication it saw (or of its first subscribe reply), so a
    disconnect costs it nothing if the server keeps its promise. It records everything
    needed to count losses: the ``"i"`` of every publication's data, in arrival order, and
    the outcome of every recovery. Stop it with :meth:`stop`.
    """

    url: str
    user: str
    channel: str
    http: aiohttp.ClientSession
    #: ``data["i"]`` of every publication received, in order (recovered ones included).
    seen: list[Any] = field(default_factory=list)
    #: Offset of every publication received, in order.
    offsets: list[int] = field(default_factory=list)
    #: Arrival time (``time.time()``) of every publication, for latency figures.
    arrived: list[float] = field(default_factory=list)
    epoch: str = ""
    offset: int = 0
    connects: int = 0
    recoveries: int = 0
    failed_recoveries: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Seconds to wait before reconnecting after a session ended normally.
    reconnect_delay: float = 0.05
    _stopping: bool = False
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Runs the connect-read-reconnect loop in a task."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff = self.reconnect_delay
        while not self._stopping:
            try:
                await self._session_once()
                backoff = self.reconnect_delay
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.errors.append(repr(exc))
            if self._stopping:
                return
            code = self.close_codes[-1] if self.close_codes else None
            if code is not None and code >= 3500:
                return  # terminal, as the SDK treats it
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _session_once(self) -> None:
        ws = await self.http.ws_connect(self.url, autoping=True, heartbeat=None)
        self._ws = ws
        self.connects += 1
        token = mint_token(SECRET, self.user, ttl=3600)
        sub: dict[str, Any] = {"channel": self.channel}
        recovering = bool(self.epoch)
        if recovering:
            sub |= {"recover": True, "offset": self.offset, "epoch": self.epoch}
        await ws.send_bytes(
            orjson.dumps({"id": 1, "connect": {"token": token}})
            + b"\n"
            + orjson.dumps({"id": 2, "subscribe": sub})
        )
        try:
            async for msg in ws:
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                now = time.time()
                for line in data.split(b"\n"):
                    obj = orjson.loads(line)
                    if not obj:
                        await ws.send_str("{}")  # pong
                    elif "push" in obj:
                        pub = obj["push"].get("pub")
                        if pub is not None and obj["push"].get("channel") == self.channel:
                            self._record(pub, now)
                    elif obj.get("id") == 2:
                        self._on_subscribed(obj, recovering, now)
                    elif "error" in obj:
                        self.errors.append(obj)
        finally:
            self.close_codes.append(ws.close_code)
            self._ws = None
            await ws.close()

    def _on_subscribed(self, reply: dict[str, Any], recovering: bool, now: float) -> None:
        if "error" in reply:
            self.errors.append(reply)
            return
        result = reply["subscribe"]
        if recovering:
            self.recoveries += 1
            if not result.get("recovered"):
                self.failed_recoveries += 1
            for pub in result.get("publications", []):
                self._record(pub, now)
        if not self.epoch or not recovering:
            self.epoch = result.get("epoch", "")
            self.offset = max(self.offset, int(result.get("offset", 0)))
        self.subscribed.set()

    def _record(self, pub: dict[str, Any], now: float) -> None:
        data = pub.get("data")
        self.seen.append(data.get("i") if isinstance(data, dict) else data)
        self.offsets.append(int(pub["offset"]))
        self.arrived.append(now)
        self.offset = int(pub["offset"])

    async def bounce(self) -> None:
        """Closes the current connection cleanly (code 1000); the client reconnects."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()

    def drop(self) -> None:
        """Aborts the current socket (as a network failure would); the client reconnects."""
        if self._ws is not None:
            transport = self._ws._response.connection  # type: ignore[union-attr]
            if transport is not None and transport.transport is not None:
                transport.transport.abort()

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
            if not self._task.done():
                self._task.cancel()


def loss_report(expected: list[int], seen: list[int]) -> str:
    """One line for an assertion message: what is missing, duplicated or out of order."""
    missing = sorted(set(expected) - set(seen))
    duplicates = len(seen) - len(set(seen))
    in_order = all(a < b for a, b in itertools.pairwise(seen))
    return (
        f"{len(seen)} received of {len(expected)}: {len(missing)} missing {missing[:10]}, "
        f"{duplicates} duplicated, {'in order' if in_order else 'OUT OF ORDER'}"
    )


class RawWebSocket:
    """A WebSocket client on a bare socket that reads only when told to.

    ``rcvbuf`` shrinks the receive window before connecting, so the server's unsent bytes
    pile up in its own buffers as they would behind a stalled browser.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def connect(
        cls, port: int, path: str = "/connection/websocket", rcvbuf: int = 4096
    ) -> RawWebSocket:
        import base64

        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            sock,
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        client = cls(sock)
        while b"\r\n\r\n" not in client.buffer:
            await client._fill()
        head, _, client.buffer = client.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        return client

    async def _fill(self, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout * TIME_SCALE)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buffer += chunk

    async def _send_frame(self, opcode: int, payload: bytes) -> None:
        import struct

        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 1 << 16:
            header = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", n)
        else:
            header = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, header + mask + masked)

    async def send(self, *commands: object) -> None:
        """Sends ``commands`` newline-joined in one text frame."""
        await self._send_frame(0x1, b"\n".join(orjson.dumps(c) for c in commands))

    async def send_close(self, code: int = 1000) -> None:
        await self._send_frame(0x8, code.to_bytes(2, "big"))

    async def frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next server frame as (opcode, payload); unfragmented frames only."""
        import struct

        while len(self.buffer) < 2:
            await self._fill(timeout)
        opcode, n, start = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
        if n == 126:
            while len(self.buffer) < 4:
                await self._fill(timeout)
            n, start = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif n == 127:
            while len(self.buffer) < 10:
                await self._fill(timeout)
            n, start = struct.unpack("!Q", self.buffer[2:10])[0], 10
        while len(self.buffer) < start + n:
            await self._fill(timeout)
        payload, self.buffer = self.buffer[start : start + n], self.buffer[start + n :]
        return opcode, payload

    def close(self) -> None:
        self.sock.close()
