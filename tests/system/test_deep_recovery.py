"""Recovery from the log, end to end: two tidings nodes on one RabbitMQ stream, a history
window of 100, clients that come back 5,000 events of their channel later, among ten
times as many of other users'.

One round serves every case, to keep the suite short: the clients (the real ``centrifuge``
SDK in Node over WebSocket, SSE clients with ``Last-Event-ID``, and server-side
subscriptions of a token's ``channels`` recovered through the connect request's ``subs``, on
``uni_websocket`` and on the bidirectional WebSocket) see one live event and go away;
5,000 rounds are published straight into the exchange, each with one event of every
client's channel and enough of other users' that each channel has ten foreign events to
one of its own (55,000 records in all); then every client comes back,
to the node it left or to the other one. Within the bounds each gets all 5,000 once, in
order, ``recovered: true``; on a channel whose namespace caps recoveries at 4,000 it gets
``recovered: false`` (a ``gap`` event on SSE) and nothing of what it missed. A live event
follows either way.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pika
import pytest

from tests.integration.live import ROOT
from tests.system.harness import (
    AMQP_URL,
    API_KEY,
    SECRET,
    TIME_SCALE,
    Node,
    delete_amqp,
    nodes,
    unique,
)
from tests.system.test_api_cluster import api
from tests.transport.test_sse import SseClient
from tidings.auth import mint_token

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration, pytest.mark.node]

MISSED = 5_000
OTHERS = 10  # other users' events after each of one channel's
CAP = 4_000
CONFORMANCE = ROOT / "conformance"
NODE_JS = shutil.which("node")
# recovery.max_seconds is raised from its 4 s: this host runs many suites at once, and a
# stream written event by event is read back in chunks of a few events each (a chunk costs a
# credit round trip), so reading 55,000 here has taken from 3 to 10 s.
CONFIG = f"""
[recovery]
max_seconds = "30s"

[channels]
history_size = 100
history_ttl = "1h"

[[namespaces]]
name = "capped"
history_size = 100
history_ttl = "1h"
recovery_max_publications = {CAP}
"""

#: Who comes back where: name -> (transport, channel, back to the other node, recovered).
CASES: dict[str, tuple[str, str, bool, bool]] = {
    "sdk": ("sdk", "user#alice", False, True),
    "sdk_other_node": ("sdk", "user#carol", True, True),
    "sdk_capped": ("sdk", "capped:inbox#frank", False, False),
    "sse": ("sse", "user#dave", False, True),
    "sse_other_node": ("sse", "user#erin", True, True),
    "sse_capped": ("sse", "capped:inbox#grace", True, False),
    "uni": ("uni", "user#heidi", False, True),
    "uni_other_node": ("uni", "user#ivan", True, True),
    "uni_capped": ("uni", "capped:inbox#mallory", False, False),
    "server_subs": ("server_subs", "user#judy", True, True),
}

if NODE_JS is None or not (CONFORMANCE / "node_modules" / "centrifuge").is_dir():
    pytest.skip("needs node and the SDK: run `npm ci` in conformance/", allow_module_level=True)


def user_of(channel: str) -> str:
    return channel.rpartition("#")[2]


def publish_round(exchange: str, channels: list[str]) -> None:
    """Every channel's events 1..MISSED, each followed by OTHERS of other users' (no
    confirms: the nodes' history says when they have all arrived)."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        # Each round has one event of every channel and enough of other users' that each
        # channel has OTHERS foreign events to one of its own.
        strangers = OTHERS - (len(channels) - 1)
        for seq in range(1, MISSED + 1):
            body = b'{"seq":%d}' % seq
            for target in channels:
                properties = pika.BasicProperties(headers={"x-tidings-channel": target})
                channel.basic_publish(exchange, "e", body, properties)
            for n in range(strangers):
                other = {"x-tidings-channel": f"user#u{(seq * 31 + n) % 997}"}
                properties = pika.BasicProperties(headers=other)
                channel.basic_publish(exchange, "e", b'{"o":1}', properties)
    finally:
        connection.close()


def newest(node: Node, channel: str) -> Any:
    page = api(node.url, "history", {"channel": channel, "limit": 1, "reverse": True})
    pubs = page.get("publications", [])
    return pubs[0]["data"].get("seq") if pubs else None


@dataclass
class Outcome:
    """What one client saw after coming back."""

    recovered: bool | None = None
    seqs: list[Any] = field(default_factory=list)
    replayed: int = 0
    gap: bool = False
    lines: list[dict[str, Any]] = field(default_factory=list)


class SdkClient:
    """``conformance/deep_recovery.js`` in Node, told by a file when to come back."""

    def __init__(self, tmp: Path, name: str, channel: str, back: Node, first: Node) -> None:
        self.go = tmp / f"{name}.go"
        recovered = CASES[name][3]
        self.env = {
            "PATH": str(Path(NODE_JS or "node").parent),
            "TIDINGS_WS_URL": first.ws_url,
            "TIDINGS_HTTP_URL": first.url,
            "TIDINGS_API_KEY": API_KEY,
            "TIDINGS_TOKENS": json.dumps({"main": mint_token(SECRET, user_of(channel), ttl=3600)}),
            "TIDINGS_TEST_TIME_SCALE": str(TIME_SCALE),
            "CHANNEL": channel,
            "MISSED": str(MISSED),
            "EXPECT_RECOVERED": "true" if recovered else "false",
            "GO_FILE": str(self.go),
            "RECONNECT_URL": back.ws_url if back is not first else "",
        }
        self.lines: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None

    async def away(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            str(NODE_JS),
            "deep_recovery.js",
            cwd=CONFORMANCE,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        while not any(line.get("event") == "away" for line in self.lines):
            await self._line(20)

    async def _line(self, timeout: float) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout * TIME_SCALE)
        if not raw:
            raise AssertionError(f"deep_recovery.js ended early: {self.lines}")
        try:
            self.lines.append(json.loads(raw))
        except json.JSONDecodeError:
            self.lines.append({"event": "stdout", "text": raw.decode(errors="replace")})

    async def back(self) -> Outcome:
        assert self.proc is not None and self.proc.stdout is not None
        self.go.touch()
        while not any(line.get("event") in ("ok", "fail") for line in self.lines):
            await self._line(90)
        await self.proc.wait()
        last = self.lines[-1]
        outcome = Outcome(lines=self.lines[-40:])
        if last["event"] == "ok":
            outcome.recovered = last["recovered"]
            outcome.replayed = last["replayed"]
        return outcome


class SseReader:
    """An ``/events`` client that comes back with ``Last-Event-ID``."""

    def __init__(self, channel: str, first: Node, back: Node) -> None:
        self.channel = channel
        self.first = first
        self.again = back
        self.token = mint_token(SECRET, user_of(channel), ttl=3600, channels=[channel])
        self.last_id = ""

    async def away(self, http: aiohttp.ClientSession) -> None:
        response = await http.get(f"{self.first.url}/events", params={"token": self.token})
        stream = SseClient(response)
        assert "connect" in (await stream.event()).json()
        first = {"channel": self.channel, "data": {"seq": 0}}
        await asyncio.to_thread(api, self.first.url, "publish", first)
        seen = await stream.event(5)
        assert seen.json()["pub"]["data"] == {"seq": 0}
        assert seen.id
        self.last_id = seen.id
        response.close()

    async def back(self, http: aiohttp.ClientSession) -> Outcome:
        response = await http.get(
            f"{self.again.url}/events",
            params={"token": self.token},
            headers={"Last-Event-ID": self.last_id},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )
        stream = SseClient(response)
        outcome = Outcome()
        connect = (await stream.event(60)).json()["connect"]
        outcome.recovered = connect["subs"][self.channel].get("recovered", False)
        live_sent = False
        while True:
            event = await stream.event(20)
            if event.event == "gap":
                outcome.gap = True
            else:
                outcome.seqs.append(event.json()["pub"]["data"]["seq"])
            if outcome.seqs and outcome.seqs[-1] == "live":
                break
            if not live_sent and (outcome.gap or outcome.seqs[-1:] == [MISSED]):
                live = {"channel": self.channel, "data": {"seq": "live"}}
                await asyncio.to_thread(api, self.again.url, "publish", live)
                live_sent = True
        response.close()
        return outcome


class ServerSubsClient:
    """A server-side subscription (the token's ``channels``) over ``uni_websocket`` or the
    bidirectional WebSocket, coming back with its position in the connect's ``subs``."""

    def __init__(self, channel: str, first: Node, back: Node, *, uni: bool) -> None:
        self.channel = channel
        self.first = first
        self.again = back
        self.uni = uni
        self.token = mint_token(SECRET, user_of(channel), ttl=3600, channels=[channel])
        self.position: dict[str, Any] = {}

    def _url(self, node: Node) -> str:
        return node.ws_url.replace("/websocket", "/uni_websocket") if self.uni else node.ws_url

    async def _connect(
        self, http: aiohttp.ClientSession, node: Node, subs: dict[str, Any]
    ) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
        ws = await http.ws_connect(self._url(node), max_msg_size=0)
        request = {"token": self.token, "subs": subs}
        await ws.send_str(json.dumps(request if self.uni else {"id": 1, "connect": request}))
        reply = await self._message(ws, 60)
        return ws, reply["connect"]

    async def _message(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> Any:
        while True:
            frame = await ws.receive_str(timeout=timeout * TIME_SCALE)
            for line in frame.splitlines():
                message = json.loads(line)
                if message:  # {} is a ping
                    return message

    async def _pub(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        message = await self._message(ws, 20)
        push = message if self.uni else message["push"]
        assert push["channel"] == self.channel, message
        pub: dict[str, Any] = push["pub"]
        return pub

    async def away(self, http: aiohttp.ClientSession) -> None:
        ws, connect = await self._connect(http, self.first, {})
        epoch = connect["subs"][self.channel]["epoch"]
        first = {"channel": self.channel, "data": {"seq": 0}}
        await asyncio.to_thread(api, self.first.url, "publish", first)
        pub = await self._pub(ws)
        assert pub["data"] == {"seq": 0}
        self.position = {"recover": True, "offset": pub["offset"], "epoch": epoch}
        await ws.close()

    async def back(self, http: aiohttp.ClientSession) -> Outcome:
        ws, connect = await self._connect(http, self.again, {self.channel: self.position})
        result = connect["subs"][self.channel]
        outcome = Outcome(recovered=result.get("recovered", False))
        outcome.seqs = [p["data"]["seq"] for p in result.get("publications", [])]
        outcome.replayed = len(outcome.seqs)
        live = {"channel": self.channel, "data": {"seq": "live"}}
        await asyncio.to_thread(api, self.again.url, "publish", live)
        outcome.seqs.append((await self._pub(ws))["data"]["seq"])
        await ws.close()
        return outcome


async def play_round(tmp: Path, exchange: str, one: Node, two: Node) -> dict[str, Outcome]:
    sdk = {
        name: SdkClient(tmp, name, channel, two if other else one, one)
        for name, (kind, channel, other, _) in CASES.items()
        if kind == "sdk"
    }
    sse = {
        name: SseReader(channel, one, two if other else one)
        for name, (kind, channel, other, _) in CASES.items()
        if kind == "sse"
    }
    pushed = {
        name: ServerSubsClient(channel, one, two if other else one, uni=kind == "uni")
        for name, (kind, channel, other, _) in CASES.items()
        if kind in ("uni", "server_subs")
    }
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(
            *(c.away() for c in sdk.values()),
            *(c.away(http) for c in sse.values()),
            *(c.away(http) for c in pushed.values()),
        )
        channels = [channel for _, channel, _, _ in CASES.values()]
        started = time.monotonic()
        await asyncio.to_thread(publish_round, exchange, channels)
        deadline = time.monotonic() + 120 * TIME_SCALE
        for node in (one, two):
            for channel in channels:
                while await asyncio.to_thread(newest, node, channel) != MISSED:
                    assert time.monotonic() < deadline, f"{node.url} never read {channel}"
                    await asyncio.sleep(0.1)
        print(f"published and read in {time.monotonic() - started:.1f} s")
        outcomes = await asyncio.gather(
            *(c.back() for c in sdk.values()),
            *(c.back(http) for c in sse.values()),
            *(c.back(http) for c in pushed.values()),
        )
    return dict(zip([*sdk, *sse, *pushed], outcomes, strict=True))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    tmp = tmp_path_factory.mktemp("deep")
    exchange, stream = unique("test.events"), unique("test.log")
    args = ["--amqp-url", AMQP_URL, "--exchange", exchange, "--stream", stream, "--workers", "1"]
    try:
        with nodes(tmp, 2, *args, config=CONFIG) as (one, two):
            yield asyncio.run(play_round(tmp, exchange, one, two))
    finally:
        delete_amqp([exchange], [stream])


@pytest.mark.parametrize("name", ["sdk", "sdk_other_node"])
def test_the_sdk_gets_every_missed_event_once_in_order(
    outcomes: dict[str, Outcome], name: str
) -> None:
    outcome = outcomes[name]
    assert (outcome.recovered, outcome.replayed) == (True, MISSED), outcome.lines


def test_the_sdk_past_the_bound_is_not_recovered_and_gets_nothing_missed(
    outcomes: dict[str, Outcome],
) -> None:
    outcome = outcomes["sdk_capped"]
    assert (outcome.recovered, outcome.replayed) == (False, 0), outcome.lines


@pytest.mark.parametrize("name", ["sse", "sse_other_node"])
def test_sse_gets_every_missed_event_once_in_order(outcomes: dict[str, Outcome], name: str) -> None:
    outcome = outcomes[name]
    assert outcome.recovered is True and not outcome.gap
    assert outcome.seqs == [*range(1, MISSED + 1), "live"]


def test_sse_past_the_bound_gets_a_gap_and_nothing_missed(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["sse_capped"]
    assert outcome.recovered is False and outcome.gap
    assert outcome.seqs == ["live"]


@pytest.mark.parametrize("name", ["uni", "uni_other_node", "server_subs"])
def test_server_side_subscriptions_get_every_missed_event_once_in_order(
    outcomes: dict[str, Outcome], name: str
) -> None:
    outcome = outcomes[name]
    assert outcome.recovered is True
    assert outcome.seqs == [*range(1, MISSED + 1), "live"]


def test_a_server_side_subscription_past_the_bound_is_not_recovered(
    outcomes: dict[str, Outcome],
) -> None:
    outcome = outcomes["uni_capped"]
    assert outcome.recovered is False
    assert outcome.seqs == ["live"]
