"""Who reports users online and offline: the election, take-overs, and nodes wired
together by an in-memory control plane (no sockets, a fake clock)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import Sink, session_of, settings
from tidings.clientinfo import ClientInfo
from tidings.config import AmqpSettings, ClusterSettings, NamespaceSettings, Settings
from tidings.control_messages import Bye, ControlMessage, Delta, Snapshot, UserDelta
from tidings.events import MemoryOutbox
from tidings.lifecycle import Due, Lifecycle, elect
from tidings.log.memory import MemoryLog
from tidings.log.outbox import RabbitMqOutbox
from tidings.metrics import Metrics
from tidings.node import Node
from tidings.presence import UserChange
from tidings.protocol.session import Session
from tidings.publication import Publication

ON = UserChange("online", "alice", "w2", 1)
OFF = UserChange("offline", "alice", "w2", 1, "disconnect")


class TestElection:
    def test_the_first_started_leads_ties_to_the_smaller_id(self) -> None:
        assert elect([]) is None
        assert elect([(20.0, "w1", 5.0), (10.0, "w3", 4.0)]) == ("w3", 4.0)
        assert elect([(10.0, "w2", 1.0), (10.0, "w1", 2.0)]) == ("w1", 2.0)


class TestLifecycle:
    def test_the_leader_reports_each_change_as_it_comes(self) -> None:
        life = Lifecycle("w1", window=20.0, margin=5.0)
        assert life.step([], ("w1", 0.0), 0.0, 1000.0) == []
        assert life.step([ON], ("w1", 1.0), 1.0, 1001.0) == [Due(ON, 1001.0)]
        assert life.step([OFF], ("w1", 2.0), 2.0, 1002.0) == [Due(OFF, 1002.0)]

    def test_a_follower_reports_nothing(self) -> None:
        life = Lifecycle("w2", window=20.0, margin=5.0)
        assert life.step([ON, OFF], ("w1", 0.0), 0.0, 1000.0) == []
        assert not life.leading

    def test_taking_over_replays_what_the_dead_leader_may_not_have_sent(self) -> None:
        life = Lifecycle("w2", window=20.0, margin=1.0)
        early = UserChange("online", "bob", "w3", 1)
        life.step([early], ("w1", 8.0), 8.0, 1008.0)  # w1 alive, heard at 8
        life.step([ON], ("w1", 10.0), 12.0, 1012.0)  # heard at 10, then silent
        # ``early`` was seen before 10 - margin: w1 reported it; ON may not have been
        # w1 expired (TTL): w2 leads; the dead worker's users leave in the same batch
        gone = UserChange("offline", "carol", "w1", 4, "expired")
        due = life.step([gone], ("w2", 25.0), 25.0, 1025.0)
        assert due == [Due(ON, 1012.0), Due(gone, 1025.0)]
        assert life.leading
        assert life.step([OFF], ("w2", 26.0), 26.0, 1026.0) == [Due(OFF, 1026.0)]

    def test_a_cluster_without_a_leader_yet_is_reported_once_one_settles(self) -> None:
        life = Lifecycle("w1", window=20.0, margin=1.0)
        assert life.step([ON], None, 0.0, 1000.0) == []
        assert life.step([], ("w1", 15.0), 15.0, 1015.0) == [Due(ON, 1000.0)]

    def test_changes_older_than_the_window_are_forgotten(self) -> None:
        life = Lifecycle("w2", window=20.0, margin=1.0)
        life.step([ON], None, 0.0, 1000.0)
        assert life.step([OFF], ("w2", 30.0), 30.0, 1030.0) == [Due(OFF, 1030.0)]

    def test_a_leader_that_steps_down_stops_reporting(self) -> None:
        life = Lifecycle("w2", window=20.0, margin=1.0)
        life.step([], ("w2", 0.0), 0.0, 1000.0)
        assert life.step([ON], ("w1", 1.0), 1.0, 1001.0) == []  # an older worker settled
        assert not life.leading


# ---------------------------------------------------------------------- nodes wired
class Wire:
    """Carries control messages between nodes at once, in order; can cut one node off."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.cut: set[str] = set()

    def send(self, message: ControlMessage) -> None:
        if message.worker in self.cut:
            return
        for worker, node in list(self.nodes.items()):
            if worker != message.worker and worker not in self.cut:
                node.on_control(message)


class WireControl:
    """A control plane on the wire (the ControlPlane interface of tidings.node)."""

    def __init__(self, wire: Wire, worker: str) -> None:
        self.wire, self.worker = wire, worker
        self.seq = 0
        self.node: Node | None = None

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    async def start(self, node: Node) -> None:
        self.node = node

    def announce(self, kind: str, channel: str, info: ClientInfo) -> None:
        self.wire.send(Delta(self.worker, self._next(), kind, channel, info))

    def announce_user(self, kind: str, user: str, since: int) -> None:
        self.wire.send(UserDelta(self.worker, self._next(), kind, user, since))

    async def close(self) -> None:
        self.wire.send(Bye(self.worker))

    def heartbeat(self) -> None:
        """What cluster.py does every heartbeat: a snapshot out, then expiry."""
        assert self.node is not None
        view = self.node.presence_view
        self.wire.send(
            Snapshot(
                self.worker,
                self._next(),
                view.local_channels(),
                None,
                view.local_users(),
                view.started,
                view.settled(self.node.monotonic()),
            )
        )
        self.node.expire_presence()


class Cluster:
    """Nodes on one wire with one fake clock (monotonic = wall - 1000)."""

    TTL, HEARTBEAT = 3.0, 1.0

    def __init__(self, config: Settings) -> None:
        self.config = config
        self.now = 1000.0
        self.wire = Wire()
        self.controls: dict[str, WireControl] = {}
        self.outboxes: dict[str, MemoryOutbox] = {}

    def add(self, worker: str) -> Node:
        control = WireControl(self.wire, worker)
        outbox = MemoryOutbox()
        node = Node(
            self.config,
            MemoryLog(),
            name=worker,
            control=control,
            outbox=outbox,
            clock=lambda: self.now,
            monotonic=lambda: self.now - 1000.0,
        )
        control.node = node
        self.wire.nodes[worker] = node
        self.controls[worker] = control
        self.outboxes[worker] = outbox
        self.now += 0.001  # started one after the other
        return node

    def beat(self, seconds: float = 1.0) -> None:
        """Lets ``seconds`` pass, every live worker beating each heartbeat."""
        for _ in range(round(seconds / self.HEARTBEAT)):
            self.now += self.HEARTBEAT
            for worker, control in self.controls.items():
                if worker not in self.wire.cut:
                    control.heartbeat()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            dict(e)
            for box in self.outboxes.values()
            for _, e in box.events
            if kind is None or e["type"] == kind
        ]


def cluster_settings(**namespace: Any) -> Settings:
    base = settings(namespaces=[NamespaceSettings(name="room", **namespace)])
    return Settings(
        auth=base.auth,
        namespaces=base.namespaces,
        cluster=ClusterSettings(heartbeat_interval=Cluster.HEARTBEAT, presence_ttl=Cluster.TTL),
    )


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster(cluster_settings())
    c.add("w1")
    c.add("w2")
    c.beat(Cluster.TTL + 1)  # both settled
    return c


def connect(node: Node, user: str) -> Session:
    session = session_of(user)
    assert node.admit(session) is None
    return session


def test_tabs_on_two_nodes_are_one_online_and_one_offline(cluster: Cluster) -> None:
    w1, w2 = cluster.wire.nodes["w1"], cluster.wire.nodes["w2"]
    a1, a2, a3 = connect(w1, "alice"), connect(w2, "alice"), connect(w2, "alice")
    assert w1.user_online("alice") and w2.user_online("alice")
    (online,) = cluster.events("user.online")
    assert (online["user"], online["node"]) == ("alice", "w1")
    w2.release(a2)
    w1.release(a1)
    cluster.beat(2)
    assert cluster.events("user.offline") == []  # a3 still open on w2
    w2.release(a3)
    (offline,) = cluster.events("user.offline")
    assert (offline["user"], offline["node"], offline["reason"]) == ("alice", "w2", "disconnect")
    assert not w1.user_online("alice")
    # every one was reported by the leader alone (w1, the first started)
    assert len(cluster.outboxes["w2"].events) == 0


def test_a_dead_nodes_users_go_offline_after_the_ttl(cluster: Cluster) -> None:
    w2 = cluster.wire.nodes["w2"]
    connect(w2, "bob")
    connect(cluster.wire.nodes["w1"], "alice")
    cluster.wire.cut.add("w2")  # killed: no goodbye
    cluster.beat(Cluster.TTL - Cluster.HEARTBEAT)
    assert cluster.events("user.offline") == []
    cluster.beat(Cluster.HEARTBEAT)
    (offline,) = cluster.events("user.offline")
    assert (offline["user"], offline["reason"], offline["node"]) == ("bob", "expired", "w2")


def test_the_leaders_death_hands_over_without_losing_a_transition(cluster: Cluster) -> None:
    w1, w2 = cluster.wire.nodes["w1"], cluster.wire.nodes["w2"]
    connect(w1, "alice")
    cluster.beat(2)
    cluster.wire.cut.add("w1")  # the leader dies ...
    carol = connect(w2, "carol")  # ... and changes happen before anyone knows
    w2.release(carol)
    assert len(cluster.outboxes["w2"].events) == 0
    cluster.beat(Cluster.TTL)
    w2_events = [(e["type"], e["user"]) for _, e in cluster.outboxes["w2"].events]
    assert w2_events == [
        ("user.online", "carol"),
        ("user.offline", "carol"),
        ("user.offline", "alice"),
    ]
    # w1 reported alice online; w2 never did (it was w1's to report, and it did)
    assert [(e["type"], e["user"]) for _, e in cluster.outboxes["w1"].events] == [
        ("user.online", "alice")
    ]


def test_a_new_node_reports_nothing_it_learns_while_settling(cluster: Cluster) -> None:
    connect(cluster.wire.nodes["w1"], "alice")
    cluster.add("w3")
    cluster.beat(Cluster.TTL + 1)
    assert len(cluster.outboxes["w3"].events) == 0
    assert len(cluster.events("user.online")) == 1


def test_ids_name_the_transition_the_same_on_every_worker(cluster: Cluster) -> None:
    connect(cluster.wire.nodes["w2"], "dave")
    (online,) = cluster.events("user.online")
    # the same change, seen by w2 itself, gets the same id when w2 reports it
    cluster.wire.cut.add("w1")
    cluster.beat(Cluster.TTL + 1)
    replayed = [e for _, e in cluster.outboxes["w2"].events if e["type"] == "user.online"]
    assert replayed and replayed[0]["id"] == online["id"]


def test_subscriptions_are_reported_where_the_namespace_asks() -> None:
    c = Cluster(cluster_settings(lifecycle_events=True))
    node = c.add("w1")
    sub, quiet = Sink("s"), Sink("q")
    info = ClientInfo("alice", "c-1")
    node.subscribe(sub, "room:1", None)
    node.track(sub, "room:1", info, False)
    node.subscribe(quiet, "news", None)  # the top level does not ask
    node.track(quiet, "news", ClientInfo("bob", "c-2"), False)
    node.unsubscribe(sub, "room:1")
    node.unsubscribe(sub, "room:1")  # twice: reported once
    node.unsubscribe(quiet, "news")
    kinds = [
        (k, e["type"], e["channel"], e["user"], e["client"]) for k, e in c.outboxes["w1"].events
    ]
    assert kinds == [
        ("tidings.subscription.subscribed", "subscription.subscribed", "room:1", "alice", "c-1"),
        (
            "tidings.subscription.unsubscribed",
            "subscription.unsubscribed",
            "room:1",
            "alice",
            "c-1",
        ),
    ]
    first, second = (e for _, e in c.outboxes["w1"].events)
    assert first["id"] != second["id"] and first["node"] == "w1" and first["time"] == c.now


def test_emit_event_adds_the_envelope() -> None:
    c = Cluster(cluster_settings())
    node = c.add("w1")
    node.emit_event("receipt.read", {"user": "alice", "type": "forged", "id": "x"}, id="r-1")
    ((key, event),) = c.outboxes["w1"].events
    assert key == "tidings.receipt.read"
    assert event == {
        "type": "receipt.read",
        "id": "r-1",
        "user": "alice",
        "node": "w1",
        "time": c.now,
    }
    node.emit_event("receipt.read", {})
    assert len(str(c.outboxes["w1"].events[1][1]["id"])) == 24


def test_the_leader_says_so_in_its_metrics(cluster: Cluster) -> None:
    leader = cluster.wire.nodes["w1"].metrics.registry.get_sample_value
    follower = cluster.wire.nodes["w2"].metrics.registry.get_sample_value
    connect(cluster.wire.nodes["w2"], "erin")
    assert (leader("tidings_lifecycle_leader"), follower("tidings_lifecycle_leader")) == (1, 0)


async def test_a_full_outbox_counts_what_it_drops_and_delivery_goes_on() -> None:
    amqp = AmqpSettings(url="amqp://127.0.0.1:1/", events_exchange="app.ev", events_buffer=3)
    metrics = Metrics()
    outbox = RabbitMqOutbox(amqp, metrics, "test")  # never connected: the broker is away
    config = cluster_settings(lifecycle_events=True)
    node = Node(config, MemoryLog(), name="w1", metrics=metrics, outbox=outbox)
    sink = Sink("s")
    node.subscribe(sink, "room:1", None)
    for i in range(10):
        node.track(sink, "room:1", ClientInfo("alice", f"c{i}"), False)
        node.admit(session_of(f"user{i}"))
    node.hub.publish(Publication("room:1", 1, b"{}", 0.0), size=10, ttl=60.0, now=0.0)
    assert len(sink.pubs) == 1
    dropped = metrics.registry.get_sample_value(
        "tidings_outbox_events_total", {"result": "dropped_overflow"}
    )
    assert outbox.buffered == 3 and dropped == 17  # 10 subscribed + 10 online, 3 kept
