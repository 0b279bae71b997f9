"""The lifecycle: build the aiohttp application, run one or several worker processes.

Each worker listens through the front (``transport/front.py``): WebSocket upgrades are
answered there, everything else is served by aiohttp.

Shutdown order (SIGTERM or SIGINT): stop accepting (close the front's server); mark the
node not ready; ask every client to reconnect elsewhere (close 3001); wait up to
``server.shutdown_timeout`` for the connections to finish; cancel the rest; close the log.
Nothing is acknowledged to RabbitMQ that the hub has not taken, so a stop never loses an
event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from aiohttp import web

from tidings import collector
from tidings.api import add_routes
from tidings.appkeys import NODE
from tidings.config import Settings
from tidings.demo import add_demo_routes, demo_settings
from tidings.events import Outbox
from tidings.ledger import Ledger
from tidings.log.base import Log
from tidings.metrics import Metrics
from tidings.node import ControlPlane, Node
from tidings.transport.emulated import add_emulated_routes
from tidings.transport.emulation import Emulation, add_emulation_route, new_worker_id
from tidings.transport.front import start_site
from tidings.transport.receipts import add_receipt_routes
from tidings.transport.sse import add_sse_routes
from tidings.transport.webpush import add_webpush_routes
from tidings.transport.websocket import add_websocket_routes

__all__ = ["create_app", "make_control", "make_ledger", "make_log", "make_outbox", "run"]

log = logging.getLogger(__name__)


def make_log(settings: Settings, name: str = "") -> Log:
    """The configured log: RabbitMQ when ``amqp.url`` is set, else the embedded memory log."""
    if settings.amqp.url:
        from tidings.log.rabbitmq import RabbitMqLog

        return RabbitMqLog(
            settings.amqp,
            reconnect_interval=settings.amqp.reconnect_interval,
            beacon_interval=settings.amqp.beacon_interval,
            # Named so that an operator (or a test) can tell its connections apart.
            connection_name=f"tidings {name or os.getpid()}",
        )
    from tidings.log.memory import MemoryLog

    return MemoryLog(
        retention_seconds=max(
            [settings.channels.history_ttl] + [ns.history_ttl for ns in settings.namespaces]
        )
    )


def make_control(settings: Settings, name: str = "") -> ControlPlane | None:
    """The control plane (presence between workers) when RabbitMQ is configured; without
    it presence is this process's own."""
    if not settings.amqp.url:
        return None
    from tidings.cluster import RabbitMqControl

    return RabbitMqControl(settings.amqp, settings.cluster, f"tidings {name or os.getpid()}")


def make_outbox(settings: Settings, metrics: Metrics, name: str = "") -> Outbox | None:
    """The events outbox when ``amqp.events_exchange`` is set (it needs RabbitMQ)."""
    if not settings.amqp.events_exchange:
        return None
    from tidings.log.outbox import RabbitMqOutbox

    return RabbitMqOutbox(settings.amqp, metrics, f"tidings {name or os.getpid()}")


def make_ledger(settings: Settings, metrics: Metrics, name: str = "") -> Ledger:
    """The ledger: in a RabbitMQ stream when ``amqp.url`` is set, else this process's own."""
    if settings.amqp.url:
        from tidings.log.ledger import RabbitMqLedger

        return RabbitMqLedger(
            settings.amqp,
            settings.ledger,
            metrics=metrics,
            name=f"tidings {name or os.getpid()} ledger",
        )
    from tidings.log.memory import MemoryLedger

    return MemoryLedger()


def _emulation(node: Node, control: ControlPlane | None) -> Emulation:
    """This worker's emulated sessions; with the control plane, posts for another worker
    are forwarded through it, addressed by its worker id."""
    if control is not None:
        from tidings.cluster import RabbitMqControl  # aio-pika, only with RabbitMQ

        if isinstance(control, RabbitMqControl):
            emulation = Emulation(control.worker)
            emulation.relay = control
            control.emulation = emulation
            return emulation
    return Emulation(new_worker_id(node.name))


def create_app(settings: Settings, event_log: Log | None = None, name: str = "") -> web.Application:
    """The whole HTTP surface of a node on one application (one port)."""
    settings = demo_settings(settings)
    control = make_control(settings, name)
    metrics = Metrics()
    node = Node(
        settings,
        event_log or make_log(settings, name),
        name=name,
        control=control,
        metrics=metrics,
        outbox=make_outbox(settings, metrics, name),
        ledger=make_ledger(settings, metrics, name),
    )
    app = web.Application(client_max_size=1 << 20)
    app[NODE] = node
    add_websocket_routes(app)
    add_sse_routes(app)
    add_emulated_routes(app)
    add_emulation_route(app, _emulation(node, control))
    add_webpush_routes(app)
    add_receipt_routes(app)
    add_demo_routes(app, settings)
    add_routes(app)

    async def start(app: web.Application) -> None:
        await node.start()

    # aiohttp's runner.cleanup() calls these in order: drain (on_shutdown); then aiohttp
    # closes its idle connections and waits for its requests in progress (event streams);
    # then stop (on_cleanup). WebSocket connections are not aiohttp requests, so stop waits
    # for them, until shutdown_timeout after the drain began.
    deadline = 0.0

    async def drain(app: web.Application) -> None:
        nonlocal deadline
        deadline = asyncio.get_running_loop().time() + settings.server.shutdown_timeout
        node.drain()

    async def stop(app: web.Application) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await node.wait_closed()
        except TimeoutError:
            log.warning("%d connections still open after server.shutdown_timeout", len(node.live))
        await node.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(drain)
    app.on_cleanup.append(stop)
    return app


def _listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # Every worker binds the same port; the kernel spreads new connections among them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def _serve(settings: Settings, sock: socket.socket, name: str) -> None:
    app = create_app(settings, name=name)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.server.shutdown_timeout,
    )
    await runner.setup()
    site = await start_site(runner, sock)
    collector.settle()
    host, port = sock.getsockname()[:2]
    log.info("tidings %s listening on http://%s:%d/", name, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("tidings %s shutting down", name)
        site.close()
        await runner.cleanup()


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _run_worker(settings: Settings, sock: socket.socket, name: str) -> int:
    _install_uvloop()
    try:
        asyncio.run(_serve(settings, sock, name))
    except Exception as exc:
        from tidings.errors import TidingsError

        if isinstance(exc, TidingsError):
            log.error("%s: %s", name, exc)
            return 2
        raise
    return 0


def run(settings: Settings) -> int:
    """Runs the configured number of workers on one port; returns the exit status."""
    workers = settings.effective_workers
    sock = _listen_socket(settings.server.host, settings.server.port, reuse_port=workers > 1)
    if workers == 1:
        return _run_worker(settings, sock, "tidings-1")
    return _supervise(settings, sock, workers)


def _supervise(settings: Settings, sock: socket.socket, workers: int) -> int:
    """Forks ``workers`` processes sharing the listening socket and restarts any that dies."""
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = _run_worker(settings, sock, f"tidings-{index}")
            finally:
                os._exit(code)
        children[pid] = index

    def forward(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(1, workers + 1):
        spawn(i)
    log.info("supervising %d workers", workers)
    status = 0
    recent_failures: list[float] = []
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            continue
        if code == 2:
            # A configuration or source error: restarting would only repeat it.
            log.error("worker %d failed at start-up; stopping", index)
            forward(signal.SIGTERM, None)
            status = 2
            continue
        now = time.monotonic()
        recent_failures = [t for t in recent_failures if now - t < 60] + [now]
        if len(recent_failures) > 5 * workers:
            log.error("workers keep dying; giving up")
            forward(signal.SIGTERM, None)
            status = 1
            continue
        log.warning("worker %d exited with %s; restarting it", index, code)
        spawn(index)
    sys.stdout.flush()
    return status
