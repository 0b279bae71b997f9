"""The node: wires the log, the router, the hub, tokens, limits, timers and metrics.

It is the log's consumer (events in) and every session's host (clients in). Everything
it does per event or per command is synchronous; the only awaits are at start, stop and
when publishing through the server API. It is composed of parts it owns, one concept
each, to which its interfaces delegate: :mod:`~tidings.admission`,
:mod:`~tidings.announcements`, :mod:`~tidings.reports`, :mod:`~tidings.publishing`,
:mod:`~tidings.server_commands`, :mod:`~tidings.recoveries` and :mod:`~tidings.push_feed`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from tidings import __version__, commands, receipts
from tidings.admission import Admission, ClientHandle
from tidings.announcements import Announcements, Announcer
from tidings.auth import ConnectionClaims, SubscriptionClaims, TokenVerifier
from tidings.channels import ChannelName, parse_channel
from tidings.clientinfo import ClientInfo
from tidings.codes import DisconnectCode
from tidings.config import ChannelOptions, Settings
from tidings.control_messages import ControlMessage
from tidings.events import Outbox
from tidings.flusher import Flusher
from tidings.history import History
from tidings.hub import Hub
from tidings.ledger import Ledger
from tidings.lifecycle import Lifecycle
from tidings.log.base import Log
from tidings.log.memory import MemoryLedger
from tidings.metrics import Metrics
from tidings.presence import Presence
from tidings.protocol.messages import RecoverPosition
from tidings.protocol.operations import (
    ConnectRecoverCall,
    NodeRpcCall,
    NotRecovered,
    Operation,
    Outcome,
    Peer,
    PublishCall,
    RecoverCall,
    Recovered,
    RecoveredChannels,
)
from tidings.protocol.session import Session, SubscribeOutcome
from tidings.proxy import ProxyClient
from tidings.publication import Publication
from tidings.publishing import PublishError, Publishing
from tidings.push_feed import PushFeed
from tidings.receipt_calls import Receipts
from tidings.record import Record
from tidings.recoveries import Recoveries
from tidings.reports import Reports
from tidings.router import Rejected, Router, parse_routes
from tidings.server_commands import ServerCommands
from tidings.subscription import HistoryPage, Subscriber
from tidings.timers import TimerQueue
from tidings.webpush import calls as push_calls

__all__ = [
    "HISTORY_SWEEP_INTERVAL",
    "ClientHandle",
    "Closable",
    "ControlPlane",
    "Node",
    "PublishError",
]

log = logging.getLogger(__name__)


#: Seconds between two sweeps of every history window.
HISTORY_SWEEP_INTERVAL = 10.0


class Closable(Protocol):
    """A client connection that can be told to go away."""

    def close(self, code: DisconnectCode, reason: str = "") -> None:
        """Closes with ``code``."""


class ControlPlane(Announcer, Protocol):
    """What carries presence between workers and nodes (:mod:`tidings.cluster`); its
    ``announce`` and ``announce_user`` are :class:`~tidings.announcements.Announcer`'s."""

    #: This worker's id in the cluster, unique per process start.
    worker: str

    async def start(self, node: Node) -> None:
        """Connects, announces this worker and starts the heartbeats."""

    async def close(self) -> None:
        """Says goodbye and disconnects."""


class Node:
    """One tidings node (one process)."""

    def __init__(
        self,
        settings: Settings,
        event_log: Log,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        name: str = "",
        control: ControlPlane | None = None,
        outbox: Outbox | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.settings = settings
        self.log = event_log
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.monotonic = monotonic
        self.name = name or f"tidings-{int(clock() * 1000) % 10**8}"
        self.router = Router(parse_routes(settings.routes), settings.amqp.max_message_bytes)
        self.verifier = TokenVerifier(settings.auth, clock)
        self.history = History()
        self.hub = Hub(self.history)
        self.timers = TimerQueue(monotonic)
        #: The application's backend (the proxies), shared by every connection.
        self.proxy = ProxyClient(settings.proxy, self.metrics, clock)
        #: Writes every connection with queued bytes once per loop turn.
        self.flusher = Flusher()
        self.head = 0
        self.started_at = clock()
        self._seen_records = False
        self._anonymous = settings.channels.allow_anonymous or any(
            ns.allow_anonymous for ns in settings.namespaces
        )
        self._options_cache: dict[str, ChannelOptions | None] = {}
        self.draining = False
        #: Every open client connection, so a shutdown can close them all.
        self.live: set[Closable] = set()
        self._all_closed: asyncio.Event | None = None
        cluster = settings.cluster
        #: This worker's id in the cluster (the control plane's), as events name it.
        self.worker = self.name if control is None else control.worker
        #: This worker's subscribers and users, and the other workers' (tidings.presence).
        # Alone, a worker's view is whole at once; in a cluster, once every other worker
        # has had the TTL to be heard from.
        self.presence_view = Presence(
            cluster.presence_ttl,
            self.worker,
            started=clock(),
            settle_at=0.0 if control is None else monotonic() + cluster.presence_ttl,
        )
        self.control = control
        #: The table every node holds whole (push subscriptions, read positions).
        self.ledger = ledger if ledger is not None else MemoryLedger()
        self.lifecycle = Lifecycle(
            self.worker,
            window=cluster.presence_ttl + 2 * cluster.heartbeat_interval,
            margin=cluster.heartbeat_interval,
        )
        #: The events for the application (``amqp.events_exchange``, when set).
        self.reports = Reports(
            outbox,
            settings.amqp.events_prefix,
            self.worker,
            self.presence_view,
            self.lifecycle,
            self.metrics,
            clock=clock,
            monotonic=monotonic,
        )
        #: This worker's subscribers and users in presence; joins and leaves pushed.
        self.announcements = Announcements(
            self.presence_view,
            control,
            self.reports,
            self._options_for_name,
            self.metrics,
            monotonic,
        )
        #: The connections admitted, counted against the ``client.*`` limits.
        self.admission = Admission(
            settings.client,
            monotonic,
            arrived=self.announcements.user_arrived,
            departed=self.announcements.user_departed,
        )
        #: Publications of ``web_push`` namespaces to Web Push, and who sends them.
        self.push_feed = PushFeed(
            settings.web_push,
            self.ledger,
            self.metrics,
            self.presence_view,
            self.worker,
            clock=clock,
            monotonic=monotonic,
        )
        #: Web Push to users whose tabs are all closed, when ``[web_push]`` is set.
        self.web_push = self.push_feed.service
        #: Read positions: marks (``tidings.read``), unread counts, ``receipt`` events.
        self.receipts = Receipts(
            self.ledger,
            self.history,
            self._options_for_name,
            head=lambda: self.head,
            epoch=lambda: self.log.epoch,
            clock=clock,
            worker=self.worker,
            report=self.emit_event,
        )
        #: Recoveries older than the history windows, read from the log.
        self.recoveries = Recoveries(
            settings,
            event_log,
            self.router,
            self.history,
            self._options_for_name,
            self._history_limits,
            head=lambda: self.head,
            metrics=self.metrics,
            clock=clock,
            monotonic=monotonic,
        )
        self.recoverer = self.recoveries.recoverer
        #: Publications through the log (the server API's, the CLI's, clients').
        self.publishing = Publishing(settings, event_log, self._options_for_name)
        #: Server commands through the log, applied to this node's sessions.
        self.commands = ServerCommands(
            settings,
            event_log,
            self.history,
            self.hub,
            self.admission.sessions,
            self.on_reject,
            self.metrics,
            clock,
        )

    @property
    def outbox(self) -> Outbox | None:
        """Where events for the application go (``amqp.events_exchange``), when set."""
        return self.reports.outbox

    @outbox.setter
    def outbox(self, outbox: Outbox | None) -> None:
        self.reports.outbox = outbox

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Warms history from the log (``now - max history TTL``) and starts the timers."""
        self.timers.start()
        # Before the log: what reads the ledger (Web Push, receipts) is whole by the time
        # the first record is routed.
        await self.ledger.start()
        warm = max(
            [self.settings.channels.history_ttl]
            + [ns.history_ttl for ns in self.settings.namespaces]
        )
        await self.log.start(self, warm)
        if self.web_push is not None:
            # After the warm-up: what the log replayed is history, not news to push.
            await self.web_push.start()
        if self.outbox is not None:
            await self.outbox.start()
        if self.control is not None:
            await self.control.start(self)
        if not self._seen_records:
            # Nothing in the warm window: everything after the log's current position is
            # what this node will see, so channels are complete from there.
            self.head = self.log.position
            self.history.floor = self.head
        # The warmed history is long-lived: out of the collector's full passes, which a
        # burst of allocations (10,000 recoveries or connections at once) otherwise runs
        # over all of it, ~150 ms each at a million events (benchmarks/results/recovery.md).
        # Frozen objects are still freed by reference counting when a window drops them.
        gc.collect()
        gc.freeze()
        self.timers.schedule(self, self.monotonic() + HISTORY_SWEEP_INTERVAL)
        self.metrics.ready.set(1)
        log.info("node %s ready at position %d, epoch %s", self.name, self.head, self.log.epoch)

    def on_timer(self, now: float) -> float:
        """Trims quiet channels' history by TTL (a window is otherwise trimmed only when it
        is written or read) and forgets windows that prove nothing beyond the floor."""
        self.history.sweep(self.clock(), self._history_limits)
        return now + HISTORY_SWEEP_INTERVAL

    def _history_limits(self, channel: str) -> tuple[int, float]:
        options = self._options_for_name(channel)
        return (0, 0.0) if options is None else (options.history_size, options.history_ttl)

    def drain(self) -> None:
        """Stops admitting and asks every client to reconnect elsewhere (3001)."""
        self.draining = True
        self.metrics.ready.set(0)
        for conn in list(self.live):
            conn.close(DisconnectCode.SHUTDOWN)

    def join(self, conn: Closable) -> None:
        """``conn`` is open: a shutdown closes it."""
        self.live.add(conn)

    def leave(self, conn: Closable) -> None:
        """``conn`` has ended."""
        self.live.discard(conn)
        if not self.live and self._all_closed is not None:
            self._all_closed.set()

    async def wait_closed(self) -> None:
        """Returns once every client connection has ended."""
        if not self.live:
            return
        self._all_closed = asyncio.Event()
        try:
            await self._all_closed.wait()
        finally:
            self._all_closed = None

    async def stop(self) -> None:
        """Stops the timers and the log."""
        self.metrics.ready.set(0)
        await self.timers.stop()
        # The events first: the goodbye would hand the report of users to another worker.
        if self.outbox is not None:
            await self.outbox.close()
        if self.control is not None:
            await self.control.close()
        await self.proxy.close()
        if self.web_push is not None:
            await self.web_push.close()
        await self.log.close()
        await self.ledger.close()

    @property
    def ready(self) -> bool:
        """Whether the node serves: log connected and warmed, not draining."""
        return self.log.ready and self.ledger.ready and not self.draining

    @property
    def connections(self) -> int:
        """Authenticated connections on this node."""
        return self.admission.connections

    @property
    def users(self) -> int:
        """Distinct users (not counting anonymous connections) connected to this node."""
        return self.admission.users

    def describe(self) -> dict[str, Any]:
        """This worker's figures, as the server API's ``info`` lists each node (and as its
        heartbeats tell the other workers)."""
        return {
            # Worker names repeat from machine to machine (tidings-1, …); the control
            # plane's id does not.
            "uid": self.name if self.control is None else self.control.worker,
            "name": self.name,
            "version": __version__,
            "num_clients": self.connections,
            "num_users": self.users,
            "num_subs": self.hub.subscriptions,
            "num_channels": sum(1 for _ in self.hub.channels()),
            "uptime": int(self.clock() - self.started_at),
            "epoch": self.log.epoch,
            "position": self.head,
            "ready": self.ready,
        }

    def cluster_nodes(self) -> list[dict[str, Any]]:
        """This worker's figures first, then every other live worker's, from their last
        heartbeat (so at most ``cluster.heartbeat_interval`` old)."""
        return [self.describe(), *(dict(n) for n in self.presence_view.nodes())]

    # ------------------------------------------------------------------ events in
    def on_records(self, records: Sequence[Record]) -> None:
        """Routes a batch of log records into the hub, then flushes every touched connection."""
        if not records:
            return
        if not self._seen_records:
            self._seen_records = True
            self.history.floor = records[0].position - 1
        now = self.clock()
        metrics = self.metrics
        pushes = 0
        publications = 0
        for record in records:
            if record.position <= self.head and self.head:
                log.warning(
                    "log position %d repeated (head %d); skipped", record.position, self.head
                )
                continue
            self.head = record.position
            if commands.COMMAND_HEADER in record.headers:
                self.commands.on_record(record)
                continue
            routed = self.router.route(record)
            if isinstance(routed, Rejected):
                self.on_reject(record, routed.kind, routed.reason)
                continue
            for channel in routed.channels:
                options = self._options_for_name(channel)
                if options is None:
                    self.on_reject(record, "unknown_namespace", f"unknown namespace of {channel!r}")
                    continue
                pub = Publication(
                    channel, record.position, routed.data, record.timestamp, routed.info
                )
                pushes += self.hub.publish(
                    pub, size=options.history_size, ttl=options.history_ttl, now=now
                )
                publications += 1
                if options.web_push and self.web_push is not None:
                    self.push_feed.push(pub)
        metrics.events_in.inc(len(records))
        metrics.publications.inc(publications)
        metrics.pushes.inc(pushes)
        metrics.log_position.set(self.head)
        metrics.consumer_lag.set(max(0.0, now - records[-1].timestamp))

    def on_epoch(self, epoch: str) -> None:
        """The log was recreated: history and positions start over."""
        log.warning("log epoch changed to %s; history dropped", epoch)
        self.history.reset(0)
        self.head = 0
        self._seen_records = False

    def on_reject(self, record: Record, kind: str, reason: str) -> None:
        """Counts, logs and quarantines an event that cannot be delivered."""
        self.metrics.rejected.labels(kind).inc()
        if kind == "unrouted":
            log.debug("event at position %d not routed: %s", record.position, reason)
            return
        log.warning(
            "event at position %d (routing key %r) rejected, %s: %s",
            record.position,
            record.routing_key,
            kind,
            reason,
        )
        self.log.quarantine(record, kind, reason)

    # ------------------------------------------------------------------ publishing
    async def publish(self, channels: Sequence[str], data: object) -> None:
        """Publishes ``data`` to ``channels`` through the log (the same path as every event).

        Raises:
            PublishError: a channel name is invalid or its namespace unknown.
        """
        await self.publishing.publish(channels, data)

    # ------------------------------------------------------------------ presence
    def options_for(self, channel: str) -> ChannelOptions | None:
        """The options of ``channel``'s namespace; None for an invalid name or unknown one."""
        return self._options_for_name(channel)

    def track(self, sub: Subscriber, channel: str, info: ClientInfo, push_join_leave: bool) -> None:
        self.announcements.track(sub, channel, info, push_join_leave)

    def on_control(self, message: ControlMessage) -> None:
        """A message of another worker: merged into the view, its changes pushed."""
        self.announcements.on_control(message)

    def expire_presence(self) -> None:
        """Forgets the workers silent for ``cluster.presence_ttl``: their clients leave
        (called every heartbeat, which is also when a new leader takes over)."""
        self.announcements.expire()

    def user_online(self, user: str) -> bool:
        """Whether ``user`` has a connection on some live worker of the cluster (as far as
        the heartbeats tell: a dead worker's users stay online for up to the TTL)."""
        return self.presence_view.online(user)

    # ------------------------------------------------------------------ events out
    def emit_event(self, kind: str, fields: Mapping[str, Any], id: str = "") -> None:
        """Sends an event of type ``kind`` to the application (``amqp.events_exchange``),
        routed ``<amqp.events_prefix>.<kind>``, with ``fields`` beside ``type``, ``id``
        (``id``, or a new random one), ``node`` and ``time``; nothing when no events
        exchange is set. Never blocks (see tidings.events)."""
        self.reports.emit(kind, fields, id)

    def presence(self, channel: str) -> Mapping[str, ClientInfo]:
        """The subscribers of ``channel`` in the cluster: client id -> info."""
        return self.presence_view.members(channel)

    def presence_stats(self, channel: str) -> tuple[int, int]:
        """``(num_clients, num_users)`` of ``channel`` in the cluster."""
        return self.presence_view.stats(channel)

    # ------------------------------------------------------------------ session host
    def _options_for_name(self, channel: str) -> ChannelOptions | None:
        cached = self._options_cache.get(channel, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        parsed = parse_channel(channel)
        options = self.channel_options(parsed) if parsed is not None else None
        if len(self._options_cache) > 100_000:
            self._options_cache.clear()
        self._options_cache[channel] = options
        return options

    def channel_options(self, channel: ChannelName) -> ChannelOptions | None:
        return self.settings.namespace(channel.namespace)

    def authenticate(self, token: str) -> ConnectionClaims:
        return self.verifier.connection(token)

    def verify_subscription(
        self, token: str, channel: str, user: str, client: str
    ) -> SubscriptionClaims:
        return self.verifier.subscription(token, channel, user, client)

    def anonymous_allowed(self) -> bool:
        return self._anonymous

    def admit_ip(self, ip: str) -> bool:
        """Counts a new connection from ``ip``; False when over the per-second limit."""
        return self.admission.admit_ip(ip)

    def admit(self, session: Session) -> DisconnectCode | None:
        if self.draining:
            return DisconnectCode.SHUTDOWN
        return self.admission.admit(session)

    def release(self, session: Session) -> None:
        self.admission.release(session)
        self.metrics.subscriptions.set(self.hub.subscriptions)

    def subscribe(
        self, sub: Subscriber, channel: str, recover: RecoverPosition | None
    ) -> SubscribeOutcome:
        options = self._options_for_name(channel)
        assert options is not None  # the session checked the namespace
        recoverable = options.history_size > 0 and options.history_ttl > 0
        recovery = self.hub.subscribe(
            sub,
            channel,
            recover,
            epoch=self.log.epoch,
            head=self.head,
            size=options.history_size,
            ttl=options.history_ttl,
            now=self.clock(),
        )
        if recovery is not None:
            self.metrics.recoveries.labels("recovered" if recovery.recovered else "failed").inc()
        self.metrics.subscriptions.set(self.hub.subscriptions)
        return SubscribeOutcome(self.log.epoch, self.head, recoverable, recovery)

    def recovers_from_log(self, channel: str, position: RecoverPosition) -> bool:
        return self.recoveries.wanted(channel, position)

    async def recover_from_log(
        self, channels: Sequence[str], position: RecoverPosition
    ) -> dict[str, Recovered | NotRecovered]:
        """Reads from the log what a client at ``position`` missed on ``channels`` (those
        :meth:`recovers_from_log` accepts), up to positions their windows cover.

        When this returns, each ``Recovered`` channel's window covers its ``position``:
        subscribe in the same step (no await between) with the window's recovery from
        there and nothing falls between the read and live delivery.
        """
        return await self.recover_since(dict.fromkeys(channels, position.offset))

    async def recover_since(self, since: Mapping[str, int]) -> dict[str, Recovered | NotRecovered]:
        """:meth:`recover_from_log` with a position per channel (channel -> the last offset
        the client saw, in the log's current epoch)."""
        return await self.recoveries.since(since)

    def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        self.hub.unsubscribe(sub, channel)
        self.announcements.untrack(sub, channel)
        self.metrics.subscriptions.set(self.hub.subscriptions)

    def read_history(
        self, channel: str, limit: int, since: RecoverPosition | None, reverse: bool
    ) -> HistoryPage | None:
        """A page of ``channel``'s history as this node holds it (every node reads the whole
        log, so every node holds the same history once it has caught up)."""
        size, ttl = self._history_limits(channel)
        return self.history.read(
            channel,
            limit=limit,
            since=since,
            reverse=reverse,
            epoch=self.log.epoch,
            head=self.head,
            size=size,
            ttl=ttl,
            now=self.clock(),
        )

    def count_error(self, code: int) -> None:
        self.metrics.errors.labels(str(int(code))).inc()

    def proxies(self, event: str, method: str | None = None) -> bool:
        return self.proxy.enabled(event, method)

    async def perform(self, operation: Operation, peer: Peer) -> Outcome:
        """Performs an operation a session handed over (see tidings.protocol.operations):
        a client publication goes to the log, a recovery reads it, the node's own RPC
        methods (Web Push, read receipts) are answered here, the rest goes to the
        application's backend."""
        if isinstance(operation, PublishCall):
            return await self.publishing.append(operation)
        if isinstance(operation, RecoverCall):
            request = operation.request
            found = await self.recover_from_log([request.channel], request.position)
            return found[request.channel]
        if isinstance(operation, ConnectRecoverCall):
            return RecoveredChannels(await self.recover_since(operation.since))
        if isinstance(operation, NodeRpcCall):
            if operation.method in receipts.METHODS:
                return await self.receipts.answer(
                    operation.method,
                    operation.user,
                    operation.client,
                    operation.data,
                    operation.reads,
                )
            return await push_calls.answer(
                self.web_push, operation.method, operation.user, operation.data
            )
        return await self.proxy.perform(operation, peer)

    # ------------------------------------------------------------------ server commands
    async def send_command(self, command: commands.ServerCommand) -> None:
        """Sends a server API command through the log, so that every node applies it.

        Raises:
            PublishError: ``api.key`` is not set (commands are signed with it).
        """
        await self.commands.send(command)
