"""The three systems under test and how to start, probe and stop each.

``baseline`` (:mod:`benchmarks.baseline_seed`) and ``tidings`` (``tidings serve`` from this
venv, as many workers as a cell needs) are started afresh for each cell; ``stomp`` is
RabbitMQ's Web-STOMP plugin inside a broker that lives for the whole run. Each publishes
through its own exchange (``bench.<target>``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import IO

import pika
import psutil

from benchmarks.broker import BrokerUnavailable, PrivateBroker, beam_pids, listening
from benchmarks.monitor import processes

__all__ = ["PER_PROCESS_MAX", "Target", "TargetUnavailable", "free_port", "http_get",
           "make_target"]

# One process may hold 20,000 descriptors (hard limit); keep room for listeners, pipes, AMQP.
PER_PROCESS_MAX = 19_500
# SO_REUSEPORT spreads connections by hash, not evenly: plan each worker at 85 % of the limit.
_WORKER_SHARE = 0.85


class TargetUnavailable(Exception):
    """The target cannot run here (not installed, not reachable, limited); says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a tool's own server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def http_get(port: int, path: str, timeout_s: float = 5.0) -> tuple[int | None, str]:
    """A GET on 127.0.0.1: the status and the body, or None and "" when the server does not
    answer."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError):
        return None, ""
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
        data = await asyncio.wait_for(reader.read(), timeout_s)
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body.decode(errors="replace")
    except (OSError, TimeoutError, IndexError, ValueError):
        return None, ""
    finally:
        writer.close()


class Target(ABC):
    """A system under test."""

    name: str
    port: int
    #: Started anew for every cell (so its memory growth is the cell's alone).
    fresh_per_cell = True

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.exchange = f"bench.{self.name}"
        self.proc: asyncio.subprocess.Process | None = None
        # Server logs go to a file: an unread pipe would stall a chatty server mid-cell.
        self.log_path = Path(tempfile.gettempdir()) / f"tidings-bench-{self.name}.log"
        self._log: IO[bytes] | None = None
        #: Settings for the next start (tidings: ``TIDINGS_*`` variables), set per cell.
        self.extra_env: dict[str, str] = {}

    def _check_port_free(self) -> None:
        """Before starting a server: its port must be free. Another benchmark running on
        this host holds it, and starting anyway would measure (or, for tidings, delete the
        stream of) that run's server.

        Raises:
            TargetUnavailable: something listens on the port.
        """
        if listening(self.port):
            raise TargetUnavailable(f"port {self.port} is in use: is another benchmark running?")

    def _open_log(self) -> IO[bytes]:
        self._log = self.log_path.open("wb")
        return self._log

    def log_tail(self, lines: int = 3) -> str:
        """The last lines of the server's log, joined with `` | ``."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    @property
    def secret(self) -> str:
        """HMAC secret for connection tokens (only tidings checks it)."""
        # RFC 7518 wants HS256 keys of at least 32 bytes; tidings enforces it.
        return "tidings-bench-secret-not-for-production-use"

    def capacity(self) -> int:
        """Most connections this target can take here; larger cells are skipped."""
        return PER_PROCESS_MAX

    @abstractmethod
    async def start(self, connections: int, workers: int = 0) -> None:
        """Start (or check) the server for a cell of ``connections`` connections, on
        ``workers`` processes if the target has several (0: the target's choice).

        Raises:
            TargetUnavailable: it cannot run; the cell is recorded as skipped.
        """

    def prepare(self) -> None:
        """Once before its cells: declare the exchange (so publishers never race a server).

        Raises:
            TargetUnavailable: the target cannot run at all here.
        """
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            connection.channel().exchange_declare(
                self.exchange, exchange_type="topic", durable=True
            )
        finally:
            connection.close()

    def close(self) -> None:
        """Once after its cells: release what :meth:`prepare` set up (here, the log file)."""
        if self._log is not None:
            self._log.close()
            self._log = None

    async def reset(self) -> None:  # noqa: B027 - an optional hook, empty on purpose
        """Before an idle cell: bring a long-lived server back to a fresh state (no-op for
        servers that are started afresh for every cell anyway)."""

    def server_pids(self) -> list[int]:
        """PIDs whose CPU and memory count as the server's (children included)."""
        return [self.proc.pid] if self.proc is not None else []

    def broker_pids(self) -> list[int]:
        """PIDs of the RabbitMQ node this target's events go through."""
        return beam_pids(exclude_home=str(PrivateBroker().home))

    async def stop(self) -> None:
        """Stop what :meth:`start` started, politely then by force (bounded in time)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            children = processes([proc.pid])[1:]
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            # Workers the server failed to take down with it.
            _, alive = psutil.wait_procs(children, timeout=5)
            for child in alive:
                child.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


class BaselineTarget(Target):
    """The seed's Tornado+pika design (:mod:`benchmarks.baseline_seed`)."""

    name = "baseline"
    port = 8890

    async def start(self, connections: int, workers: int = 0) -> None:
        self._check_port_free()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.baseline_seed", "--port", str(self.port),
            "--amqp-url", self.amqp_url, "--exchange", self.exchange, "--log-level", "WARNING",
            stdout=asyncio.subprocess.PIPE, stderr=self._open_log(),
        )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await self.stop()
            raise TargetUnavailable(f"baseline_seed not ready in 30 s: {self.log_tail()}")


class TidingsTarget(Target):
    """``tidings serve`` from the venv that runs this benchmark; with ``embedded``, on its
    in-memory log instead of RabbitMQ (one worker, events through the HTTP API only)."""

    name = "tidings"
    port = 8891
    #: Key of the server API (``/api/broadcast``), for the tools that publish through it.
    api_key = "tidings-bench-api-key"

    # The bench's own stream, so that cells never read the stream of other work.
    stream = "tidings.bench"

    def __init__(
        self, amqp_url: str, workers: int = 1, embedded: bool = False, port: int | None = None
    ) -> None:
        super().__init__(amqp_url)
        if port is not None:
            self.port = port
        self.executable = Path(sys.executable).with_name("tidings")
        self.min_workers = workers
        self.workers = workers
        self.embedded = embedded

    def capacity(self) -> int:
        return 16 * int(PER_PROCESS_MAX * _WORKER_SHARE)

    def workers_for(self, connections: int) -> int:
        """Workers needed so no worker passes the open-file limit."""
        return max(1, -(-connections // int(PER_PROCESS_MAX * _WORKER_SHARE)))

    async def start(self, connections: int, workers: int = 0) -> None:
        if not self.executable.exists():
            raise TargetUnavailable(f"{self.executable} not found (pip install -e .)")
        self._check_port_free()
        needed = self.workers_for(connections)
        self.workers = max(workers, needed) if workers else max(self.min_workers, needed)
        args = [
            "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--hmac-secret", self.secret, "--api-key", self.api_key, "--no-demo",
            "--workers", str(self.workers), "--log-level", "warning",
        ]
        # The load generators are thousands of clients behind a few addresses: lift the
        # per-address connection rate limit, which exists against floods from one host.
        env = dict(os.environ, TIDINGS_CLIENT_CONNECTIONS_PER_IP_PER_SECOND="0")
        if self.embedded:
            env.pop("TIDINGS_AMQP_URL", None)
        else:
            # A fresh stream per cell, deleted while no server reads it: every worker warms
            # its history from the stream at start, and the previous cells' events would
            # make each start slower (minutes with many workers) and the cell noisier.
            try:
                await asyncio.to_thread(self._delete_stream)
            except (OSError, pika.exceptions.AMQPError) as exc:
                raise TargetUnavailable(
                    f"cannot delete the stream {self.stream}: {exc!r}") from exc
            args += ["--amqp-url", self.amqp_url, "--exchange", self.exchange,
                     "--stream", self.stream]
        env.update(self.extra_env)
        self.proc = await asyncio.create_subprocess_exec(
            str(self.executable), *args, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=self._open_log(),
        )
        ready_timeout_s = 60 + 15 * self.workers
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                break
            # /readyz says the stream consumer is attached; /healthz only that it listens.
            ready, _ = await http_get(self.port, "/readyz", 2)
            if ready == 404:
                ready, _ = await http_get(self.port, "/healthz", 2)
            if ready == 200:
                await asyncio.sleep(1.0)  # let every worker finish attaching
                return
            await asyncio.sleep(0.3)
        exited = self.proc.returncode is not None
        await self.stop()
        why = "exited" if exited else f"not ready in {ready_timeout_s} s"
        raise TargetUnavailable(f"tidings serve {why}: {self.log_tail()}")


    def _delete_stream(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            connection.channel().queue_delete(self.stream)
        finally:
            connection.close()


class StompTarget(Target):
    """RabbitMQ's Web-STOMP plugin: on a private node by default (see :mod:`benchmarks.broker`),
    or on the shared node at 15674 with ``--stomp-broker shared``."""

    name = "stomp"
    port = 15674
    fresh_per_cell = False

    def __init__(self, amqp_url: str, private: bool = True) -> None:
        super().__init__(amqp_url)
        self.broker = PrivateBroker() if private else None

    def prepare(self) -> None:
        if self.broker is not None:
            try:
                self.broker.start()
            except BrokerUnavailable as exc:
                raise TargetUnavailable(str(exc)) from exc
            self.amqp_url = self.broker.amqp_url
            self.port = self.broker.stomp_port
        super().prepare()

    def close(self) -> None:
        super().close()
        if self.broker is not None:
            self.broker.stop()

    def capacity(self) -> int:
        # RabbitMQ refuses sockets past 90 % of (its open-file limit - 100), keeping the rest
        # for files; it raises a "file descriptor limit alarm" there.
        known = [n for n in map(_nofile_soft, self.server_pids()) if n]
        if not known:
            return PER_PROCESS_MAX
        return min(PER_PROCESS_MAX, *(int((n - 100) * 0.9) - 100 for n in known))

    async def reset(self) -> None:
        # The broker keeps memory of earlier cells and returns it to the OS lazily; an idle
        # cell's memory per connection is only meaningful on a freshly started node.
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
            await asyncio.to_thread(self.prepare)

    async def start(self, connections: int, workers: int = 0) -> None:
        if not listening(self.port):
            raise TargetUnavailable(f"Web-STOMP not listening on {self.port}")

    def server_pids(self) -> list[int]:
        return self.broker_pids()

    def broker_pids(self) -> list[int]:
        # Web-STOMP lives in the broker: server and broker are the same processes here.
        return self.broker.pids() if self.broker is not None else super().broker_pids()

    async def stop(self) -> None:
        """The broker outlives the cell; nothing to stop."""


def _nofile_soft(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return None


def make_target(
    name: str, amqp_url: str, private_stomp_broker: bool = True, tidings_workers: int = 1
) -> Target:
    """Build a target by name (``baseline``, ``stomp`` or ``tidings``)."""
    if name == "baseline":
        return BaselineTarget(amqp_url)
    if name == "tidings":
        return TidingsTarget(amqp_url, tidings_workers)
    if name == "stomp":
        return StompTarget(amqp_url, private_stomp_broker)
    raise ValueError(f"unknown target {name!r}; choose from baseline, stomp, tidings")
