"""Property-based fuzzing of the codec and the session.

Random, mutated, truncated, huge and binary frames go into ``decode_frame`` and into
``Session.receive`` before and after connect. The codec may raise nothing but
``ProtocolError``; the session never raises, always ends in a consistent state (open with
replies, or closed with a code), emits only one-line JSON, and two sessions on one host
never see each other's subscriptions.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.fakes import T0, WALL, Client, FakeHost, token
from tidings.codes import DisconnectCode
from tidings.protocol.codec import METHODS as PROTOCOL_METHODS
from tidings.protocol.codec import ProtocolError, decode_frame
from tidings.protocol.messages import Command
from tidings.protocol.session import SessionState

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CHANNELS = [
    "news",
    "user#alice",
    "user#bob",
    "dialog#alice,bob",
    "$s",
    "private:room",
    "nohistory:x",
    "closed:x",
    "public:p",
    "nowhere:y",
    "bad channel",
    "",
]
_TOKENS = [
    token("alice"),
    token("alice", channels=["news", "user#alice"]),
    token("alice", exp=int(WALL) - 10),
    token("alice", exp=int(WALL) + 30),
    token("bob"),
    token("bob", channels=["user#bob", "news"]),
    token("alice", channel="$s"),
    token("bob", channel="$s"),
    token("alice", channel="user#alice", exp=int(WALL) - 1),
    token("alice", channel="private:room", exp=int(WALL) + 20),
    "not-a-token",
    "",
]
METHODS = list(PROTOCOL_METHODS)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_ids = st.one_of(
    st.integers(0, 50),
    st.integers(0, 50),
    st.integers(0, 50),
    st.integers(-5, 2**33),
    st.sampled_from([None, "1", 1.5, True, [], {}]),
)
_positions = st.fixed_dictionaries(
    {},
    optional={
        "recover": st.booleans() | _json,
        "offset": st.integers(-2, 20) | _json,
        "epoch": st.sampled_from(["ep1", "", "old"]) | _json,
    },
)
_bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "channel": st.sampled_from(CHANNELS) | _json,
            "token": st.sampled_from(_TOKENS) | _json,
            "recover": st.booleans() | _json,
            "offset": st.integers(-2, 20) | _json,
            "epoch": st.sampled_from(["ep1", "", "old"]) | _json,
            "subs": st.dictionaries(st.sampled_from(CHANNELS), _positions, max_size=3) | _json,
            "data": _json,
            "name": st.sampled_from(["js", ""]) | _json,
        },
    ),
    _json,
)


_typed_bodies = st.fixed_dictionaries(
    {"channel": st.sampled_from(CHANNELS)},
    optional={
        "token": st.sampled_from(_TOKENS),
        "recover": st.booleans(),
        "offset": st.integers(0, 20),
        "epoch": st.sampled_from(["ep1", "", "old"]),
    },
)
_typed = st.builds(
    lambda cid, method, body: {"id": cid, method: body},
    st.integers(1, 50),
    st.sampled_from(["subscribe"] * 6 + ["unsubscribe"] * 2 + ["sub_refresh", "refresh"]),
    _typed_bodies,
)


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.integers(0, 2)):
        return draw(_typed)  # well-typed commands, so sessions get far
    obj: dict[str, Any] = {}
    if draw(st.booleans()):
        obj["id"] = draw(_ids)
    for method in draw(
        st.lists(st.sampled_from([*METHODS, "teleport", ""]) | st.text(max_size=6), max_size=2)
    ):
        obj[method] = draw(_bodies)
    return obj


def _line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


_HUGE = [
    b"[" * 5000 + b"]" * 5000,
    b'{"id":1,"subscribe":{"channel":"' + b"x" * 100_000 + b'"}}',
    b'{"id":1,"connect":{"token":"' + b"t" * 50_000 + b'"}}',
    b'{"id":2,"subscribe":{"channel":"news","data":' + b"[" * 1100 + b"]" * 1100 + b"}}",
    b"\n" * 10_000,
    b"{}\n" * 500,
    b'{"id":3,"unsubscribe":{"channel":"news"}}\n' * 200,
    b'{"id":99999999999999999999999}',
    b'{"id":1,"subscribe":{"channel":"news","recover":true,"offset":1e309}}',
]


@st.composite
def frames(draw: st.DrawFn) -> bytes | str:
    lines = [_line(c) for c in draw(st.lists(commands(), min_size=0, max_size=5))]
    frame = b"\n".join(lines)
    kind = draw(st.sampled_from(["plain"] * 6 + ["truncate", "splice", "binary", "huge", "text"]))
    if kind == "truncate" and frame:
        frame = frame[: draw(st.integers(0, len(frame)))]
    elif kind == "splice":
        at = draw(st.integers(0, len(frame)))
        frame = frame[:at] + draw(st.binary(max_size=8)) + frame[at:]
    elif kind == "binary":
        frame = draw(st.binary(max_size=64))
    elif kind == "huge":
        frame = draw(st.sampled_from(_HUGE))
    elif kind == "text":
        return draw(st.text(max_size=40))
    return frame


# ---------------------------------------------------------------------------- codec
@FUZZ
@given(frame=frames(), limit=st.integers(1, 10))
def test_decode_frame_raises_only_protocol_error(frame: bytes | str, limit: int) -> None:
    try:
        result = decode_frame(frame, limit)
    except ProtocolError:
        return
    assert len(result) <= limit
    for command in result:
        assert isinstance(command, Command)
        assert 0 <= command.id < 2**32
        assert command.request is None or not command.error


@FUZZ
@given(data=st.binary(max_size=256))
def test_decode_frame_on_binary_garbage(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(data, 100)


# ---------------------------------------------------------------------------- session
def _check_output(messages: list[bytes]) -> None:
    for message in messages:
        assert b"\n" not in message and message
        obj = orjson.loads(message)
        assert isinstance(obj, dict)
        if "id" in obj:
            assert isinstance(obj["id"], int) and obj["id"] > 0
            (key,) = set(obj) - {"id"}
            assert isinstance(obj[key], dict)
            if key == "error":
                assert isinstance(obj[key]["code"], int) and obj[key]["message"]


def _check_state(c: Client) -> None:
    s = c.session
    if s.close_code is not None:
        assert isinstance(s.close_code, DisconnectCode)
        assert s.state is SessionState.CLOSED
        assert s.channels == set()
    else:
        assert s.state in (SessionState.CONNECTING, SessionState.CONNECTED)
    if s.state is SessionState.CONNECTING:
        assert s.channels == set()
    assert s.server_channels <= s.channels or s.state is SessionState.CLOSED
    assert len(s.channels) <= c.host.settings.client.max_subscriptions


def _check_isolation(host: FakeHost, clients: list[Client]) -> None:
    assert host.hub.subscriptions == sum(len(c.session.channels) for c in clients)
    alice, bob = clients
    assert not {"user#bob"} & alice.session.channels
    assert not {"user#alice"} & bob.session.channels
    before = {id(c): len(c.sink.pubs) for c in clients}
    host.head = max(host.head, 1000)  # past any position a client claimed (skip_until)
    seen = {ch for c in clients for ch in c.session.channels} | set(CHANNELS)
    for channel in sorted(seen):
        if channel and host.settings.namespace(channel.partition(":")[0] if ":" in channel else ""):
            host.publish(channel, {"probe": channel})
    for c in clients:
        got = {p.channel for p in c.sink.pubs[before[id(c)] :]}
        assert got == {ch for ch in c.session.channels}, (got, c.session.channels)


@FUZZ
@given(
    connected=st.tuples(*[st.sampled_from([True, True, True, False])] * 2),
    steps=st.lists(
        st.tuples(
            st.sampled_from([0, 1]),
            frames(),
            st.sampled_from([0.0, 1.0, 10.0]) | st.floats(0, 40),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_session_survives_anything(
    connected: tuple[bool, bool], steps: list[tuple[int, bytes | str, float]]
) -> None:
    host = FakeHost()
    clients = [Client(host, name="alice"), Client(host, name="bob")]
    for c, user, pre in zip(clients, ("alice", "bob"), connected, strict=True):
        if pre:
            c.connect(token(user))
    now = T0
    for who, frame, delay in steps:
        c = clients[who]
        now += delay
        c.session.receive(frame, now)
        _check_output(c.session.take_output())
        for other in clients:
            other.session.tick(now)
            _check_output(other.session.take_output())
        for other in clients:
            _check_state(other)
    _check_isolation(host, clients)
    for c in clients:
        event(f"close {c.session.close_code!r}, {len(c.session.channels)} channels")
        c.session.closed()
    assert host.hub.subscriptions == 0
    assert len(host.released) == len({id(s) for s in host.released})


@FUZZ
@given(cmds=st.lists(commands(), min_size=1, max_size=8), pre=st.booleans())
def test_well_formed_frames_get_replies_or_a_close(cmds: list[dict[str, Any]], pre: bool) -> None:
    host = FakeHost()
    c = Client(host)
    if pre:
        c.connect()
    frame = b"\n".join(_line(x) for x in cmds)
    c.session.receive(frame, T0)
    out = c.session.take_output()
    _check_output(out)
    _check_state(c)
    if c.session.close_code is None:
        # Replies come in command order: their ids are a subsequence of the commands' ids.
        sent = iter([x.get("id") for x in cmds])
        assert all(any(i == j for j in sent) for i in (orjson.loads(m)["id"] for m in out))


@FUZZ
@given(
    steps=st.lists(
        st.tuples(st.sampled_from([0, 1]), st.lists(_typed, min_size=1, max_size=4)),
        min_size=1,
        max_size=12,
    ),
    tokens=st.tuples(st.sampled_from(_TOKENS[:2]), st.sampled_from(_TOKENS[4:6])),
)
def test_two_sessions_never_share_subscriptions(
    steps: list[tuple[int, list[dict[str, Any]]]], tokens: tuple[str, str]
) -> None:
    host = FakeHost()
    clients = [Client(host, name="alice"), Client(host, name="bob")]
    for c, tok in zip(clients, tokens, strict=True):
        c.connect(tok)
    for who, cmds in steps:
        c = clients[who]
        c.session.receive(b"\n".join(_line(x) for x in cmds), T0)
        out = c.session.take_output()
        _check_output(out)
        for other in clients:
            _check_state(other)
        if c.session.close_code is None:
            assert len(out) == len(cmds)  # every well-typed command with an id is answered
    event(f"{sum(len(c.session.channels) for c in clients)} channels in all")
    _check_isolation(host, clients)
