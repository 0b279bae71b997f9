"""Prometheus metrics of one node process (each process has its own registry)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)

# The *_created series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = ["Metrics"]


class Metrics:
    """Every metric tidings exports, registered on a private registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "tidings_connections", "Open client connections", ["transport"], registry=r
        )
        self.subscriptions = Gauge(
            "tidings_subscriptions", "Channel subscriptions on this node", registry=r
        )
        self.events_in = Counter("tidings_events_in", "Events read from the log", registry=r)
        self.publications = Counter(
            "tidings_publications", "Publications (event x channel) handed to the hub", registry=r
        )
        self.pushes = Counter("tidings_pushes", "Publications delivered to connections", registry=r)
        self.rejected = Counter(
            "tidings_events_rejected", "Events that could not be routed", ["kind"], registry=r
        )
        self.disconnects = Counter(
            "tidings_disconnects", "Connections closed by the server, by code", ["code"], registry=r
        )
        self.errors = Counter(
            "tidings_command_errors",
            "Error replies to client commands, by code",
            ["code"],
            registry=r,
        )
        self.slow_disconnects = Counter(
            "tidings_slow_disconnects", "Connections cut because they read too slowly", registry=r
        )
        self.recoveries = Counter(
            "tidings_recoveries", "Recovery requests by outcome", ["outcome"], registry=r
        )
        self.refused = Counter(
            "tidings_connections_refused",
            "Connections refused before the protocol, by reason",
            ["reason"],
            registry=r,
        )
        self.api_requests = Counter(
            "tidings_api_requests",
            "Server API requests by method and status",
            ["method", "status"],
            registry=r,
        )
        self.proxy_requests = Counter(
            "tidings_proxy_requests",
            "Requests to the application's backend, by event and result "
            "(ok, anonymous, error, disconnect, failed)",
            ["event", "result"],
            registry=r,
        )
        self.log_position = Gauge(
            "tidings_log_position", "Last log position processed by this node", registry=r
        )
        self.consumer_lag = Gauge(
            "tidings_consumer_lag_seconds",
            "Age of the last event read from the log when it was read",
            registry=r,
        )
        self.outbox_events = Counter(
            "tidings_outbox_events",
            "Events for the application (amqp.events_exchange), by result "
            "(published, dropped_overflow, dropped_shutdown)",
            ["result"],
            registry=r,
        )
        self.outbox_buffered = Gauge(
            "tidings_outbox_buffered",
            "Events for the application waiting for the broker's confirm",
            registry=r,
        )
        self.lifecycle_leader = Gauge(
            "tidings_lifecycle_leader",
            "1 when this worker is the one that reports users online and offline",
            registry=r,
        )
        self.web_push = Counter(
            "tidings_web_push",
            "Web Push messages by result (sent, retried, gone, failed, expired, dropped, "
            "refused; notice: a payload too large, sent as a notice)",
            ["result"],
            registry=r,
        )
        self.web_push_queue = Gauge(
            "tidings_web_push_queue", "Web Push messages queued or waiting for a retry", registry=r
        )
        self.web_push_subscriptions = Counter(
            "tidings_web_push_registrations",
            "Push subscription registrations by result (added, renewed, removed, refused)",
            ["result"],
            registry=r,
        )
        self.ledger_writes = Counter(
            "tidings_ledger_writes",
            "Ledger writes made by this node, by result (applied; refused: too large or "
            "not started; failed: not confirmed or not read back in time, may still apply)",
            ["result"],
            registry=r,
        )
        self.ledger_entries = Gauge(
            "tidings_ledger_entries",
            "Entries of the ledger held here, by kind",
            ["kind"],
            registry=r,
        )
        self.ledger_snapshots = Counter(
            "tidings_ledger_snapshots", "Snapshots of the ledger written by this node", registry=r
        )
        self.ready = Gauge("tidings_ready", "1 when the node is ready to serve", registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
