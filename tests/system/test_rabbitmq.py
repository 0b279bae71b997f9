"""RabbitMQ as the source and the log, end to end: real broker, real tidings processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pika
import pytest

from tests.system.harness import (
    AMQP_URL,
    API_KEY,
    SECRET,
    TIDINGS,
    TIME_SCALE,
    Client,
    CutProxy,
    Publisher,
    delete_amqp,
    nodes,
    start_node,
    unique,
)
from tidings.auth import mint_token

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """A fresh exchange and stream, deleted afterwards."""
    exchange, stream = unique("test.events"), unique("test.log")
    yield exchange, stream
    delete_amqp([exchange, unique("unused")], [stream])


def amqp_args(exchange: str, stream: str, url: str = AMQP_URL) -> list[str]:
    return ["--amqp-url", url, "--exchange", exchange, "--stream", stream, "--workers", "1"]


async def test_event_reaches_its_user_and_nobody_else(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    exchange, stream = names
    publisher = await asyncio.to_thread(Publisher, exchange)
    with nodes(tmp_path, 1, *amqp_args(exchange, stream)) as (node,):
        alice = Client(node.ws_url, "alice", ["user#alice"])
        bob = Client(node.ws_url, "bob", ["user#bob"])
        await alice.start()
        await bob.start()
        await asyncio.to_thread(
            publisher.publish,
            "invoice.paid",
            {"text": "Invoice #12 paid"},
            {"x-tidings-channel": "user#alice"},
        )
        await alice.wait_for(1)
        await asyncio.sleep(0.3 * TIME_SCALE)
        assert [p[0] for p in alice.pubs] == ["user#alice"]
        assert alice.pubs[0][2] == {"text": "Invoice #12 paid"}
        assert alice.pubs[0][1] >= 1
        assert bob.pubs == []
        await alice.stop()
        await bob.stop()
    publisher.close()


async def test_routing_rules_from_config(tmp_path: Path, names: tuple[str, str]) -> None:
    exchange, stream = names
    config = """
[[routes]]
match = "invoice.*"
channels = ["user#{body.user}", "account:{headers.account_id}"]

[[namespaces]]
name = "account"
"""
    publisher = await asyncio.to_thread(Publisher, exchange)
    with nodes(tmp_path, 1, *amqp_args(exchange, stream), config=config) as (node,):
        alice = Client(node.ws_url, "alice", ["user#alice", "account:42"])
        await alice.start()
        await asyncio.to_thread(
            publisher.publish, "invoice.sent", {"user": "alice", "n": 1}, {"account_id": 42}
        )
        # No rule matches this one: counted, not delivered.
        await asyncio.to_thread(publisher.publish, "report.ready", {"user": "alice"})
        await alice.wait_for(2)
        await asyncio.sleep(0.3 * TIME_SCALE)
        assert sorted(p[0] for p in alice.pubs) == ["account:42", "user#alice"]
        assert len({p[1] for p in alice.pubs}) == 1  # one event, one position
        with urllib.request.urlopen(node.url + "/metrics") as r:
            metrics = r.read().decode()
        assert 'tidings_events_rejected_total{kind="unrouted"} 1.0' in metrics
        await alice.stop()
    publisher.close()


async def test_two_nodes_give_the_same_offsets(tmp_path: Path, names: tuple[str, str]) -> None:
    exchange, stream = names
    publisher = await asyncio.to_thread(Publisher, exchange)
    with nodes(tmp_path, 2, *amqp_args(exchange, stream)) as (one, two):
        a = Client(one.ws_url, "alice", ["user#alice"])
        b = Client(two.ws_url, "alice", ["user#alice"])
        await a.start()
        await b.start()
        for i in range(20):
            await asyncio.to_thread(
                publisher.publish, "x", {"i": i}, {"x-tidings-channel": "user#alice"}
            )
        await a.wait_for(20)
        await b.wait_for(20)
        assert [p[2]["i"] for p in a.pubs] == list(range(20))
        assert [p[1] for p in a.pubs] == [p[1] for p in b.pubs]
        assert a.replies[2]["subscribe"]["epoch"] == b.replies[2]["subscribe"]["epoch"]
        await a.stop()
        await b.stop()
    publisher.close()


async def test_api_publish_goes_through_the_exchange(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    exchange, stream = names
    with nodes(tmp_path, 2, *amqp_args(exchange, stream)) as (one, two):
        client = Client(two.ws_url, "alice", ["user#alice"])
        await client.start()
        request = urllib.request.Request(
            one.url + "/api/publish",
            data=json.dumps({"channel": "user#alice", "data": {"via": "api"}}).encode(),
            headers={"X-API-Key": API_KEY},
        )
        with urllib.request.urlopen(request) as r:
            assert json.loads(r.read()) == {"result": {}}
        # Published on node one, delivered by node two: it went through RabbitMQ.
        await client.wait_for(1)
        assert client.pubs[0][2] == {"via": "api"}
        await client.stop()


async def test_link_cut_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    exchange, stream = names
    proxy = CutProxy()
    await proxy.start()
    publisher = await asyncio.to_thread(Publisher, exchange)
    # start_node blocks; the proxy lives on this loop and must keep serving meanwhile.
    node = await asyncio.to_thread(start_node, tmp_path, *amqp_args(exchange, stream, proxy.url))
    try:
        client = Client(node.ws_url, "alice", ["user#alice"])
        await client.start()
        total = 300

        def publish_all() -> None:
            for i in range(total):
                publisher.publish("x", {"i": i}, {"x-tidings-channel": "user#alice"})
                time.sleep(0.005)

        run = asyncio.get_running_loop().run_in_executor(None, publish_all)
        for _ in range(3):
            await asyncio.sleep(0.4 * TIME_SCALE)
            await proxy.linked()
            assert proxy.cut() > 0
        await run
        await client.wait_for(total, timeout=60)
        seen = [p[2]["i"] for p in client.pubs]
        assert seen == list(range(total)), f"missing/duplicated: {len(seen)} received"
        offsets = [p[1] for p in client.pubs]
        assert offsets == sorted(set(offsets))
        assert client.close_code is None  # the client never noticed
        await client.stop()
    finally:
        node.stop()
        await proxy.stop()
        publisher.close()


async def test_bad_messages_are_quarantined_and_the_next_good_one_delivered(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    exchange, stream = names
    quarantine = unique("test.quarantine")
    config = f"""
[amqp]
max_message_bytes = 1024
quarantine_exchange = "{quarantine}"

[[routes]]
match = "invoice.*"
channels = ["user#{{body.user}}"]
"""
    publisher = await asyncio.to_thread(Publisher, exchange)
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(quarantine, "fanout", durable=True)
    qname = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(qname, quarantine)
    try:
        with nodes(tmp_path, 1, *amqp_args(exchange, stream), config=config) as (node,):
            client = Client(node.ws_url, "alice", ["user#alice"])
            await client.start()
            bad = [
                ("invoice.paid", None, b"this is not json"),
                ("invoice.paid", None, json.dumps({"user": "alice", "pad": "x" * 2000}).encode()),
                ("invoice.paid", None, json.dumps({"no_user": 1}).encode()),
                ("other", {"x-tidings-channel": "user#alice"}, b"{broken"),
                # Names that no client could be given: refused like any other bad event.
                ("other", {"x-tidings-channel": "user#al\x00ice"}, b"{}"),
                ("other", {"x-tidings-channel": b"user#\xffalice"}, b"{}"),
                ("invoice.paid", None, json.dumps({"user": "alice\x1b"}).encode()),
                ("invoice.paid", None, json.dumps({"user": "a" * 251}).encode()),
            ]
            for key, headers, body in bad:
                await asyncio.to_thread(publisher.publish, key, None, headers, body)
            await asyncio.to_thread(publisher.publish, "invoice.paid", {"user": "alice", "ok": 1})
            await client.wait_for(1)
            assert [p[2] for p in client.pubs] == [{"user": "alice", "ok": 1}]
            kinds = []
            deadline = time.monotonic() + 10 * TIME_SCALE
            while len(kinds) < len(bad) and time.monotonic() < deadline:
                method, props, body = ch.basic_get(qname, auto_ack=True)
                if method is None:
                    time.sleep(0.05)
                    continue
                headers = props.headers or {}
                kind = headers.get("x-tidings-reject-kind")
                kinds.append(kind.decode() if isinstance(kind, bytes) else kind)
                assert "x-tidings-position" in headers
            assert sorted(kinds) == sorted(
                ["not_json", "too_large", "missing_field", "not_json"] + ["bad_channel"] * 4
            )
            with urllib.request.urlopen(node.url + "/metrics") as r:
                metrics = r.read().decode()
            assert 'tidings_events_rejected_total{kind="not_json"} 2.0' in metrics
            assert 'tidings_events_rejected_total{kind="bad_channel"} 4.0' in metrics
            assert "too_large" in node.log_text()
            await client.stop()
    finally:
        ch.exchange_delete(quarantine)
        conn.close()
        publisher.close()


async def test_workers_share_the_port_and_all_deliver(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    exchange, stream = names
    args = [*amqp_args(exchange, stream)[:-2], "--workers", "2"]
    publisher = await asyncio.to_thread(Publisher, exchange)
    with nodes(tmp_path, 1, *args) as (node,):
        # Both workers must be ready: /readyz answers from whichever the kernel picks.
        seen_workers: set[str] = set()
        deadline = time.monotonic() + 30 * TIME_SCALE
        while len(seen_workers) < 2 and time.monotonic() < deadline:
            request = urllib.request.Request(node.url + "/api/info", headers={"X-API-Key": API_KEY})
            try:
                with urllib.request.urlopen(request, timeout=2) as r:
                    info = json.loads(r.read())["result"]["nodes"][0]  # the answering worker
                if info["ready"]:
                    seen_workers.add(info["name"])
            except OSError:
                pass
        assert len(seen_workers) == 2, seen_workers
        clients = [Client(node.ws_url, f"u{i}", ["news"]) for i in range(16)]
        for c in clients:
            await c.start()
        for i in range(10):
            await asyncio.to_thread(publisher.publish, "x", {"i": i}, {"x-tidings-channel": "news"})
        for c in clients:
            await c.wait_for(10)
            assert [p[2]["i"] for p in c.pubs] == list(range(10))
        for c in clients:
            await c.stop()
    publisher.close()


def test_wrong_credentials_fail_fast_with_a_clear_error(tmp_path: Path) -> None:
    node = start_node(
        tmp_path,
        "--amqp-url",
        "amqp://guest:pw-7f3a9c@127.0.0.1:5672/",
        "--workers",
        "1",
        wait_ready=False,
    )
    code = node.proc.wait(30 * TIME_SCALE)
    assert code == 2
    text = node.log_text()
    assert "Traceback" not in text
    assert "pw-7f3a9c" not in text  # the password is never logged
    assert "ACCESS_REFUSED" in text or "credentials" in text.lower() or "auth" in text.lower()


async def test_client_recovers_on_another_node(tmp_path: Path, names: tuple[str, str]) -> None:
    exchange, stream = names
    publisher = await asyncio.to_thread(Publisher, exchange)
    with nodes(tmp_path, 2, *amqp_args(exchange, stream)) as (one, two):
        first = Client(one.ws_url, "alice", ["user#alice"])
        await first.start()
        for i in range(5):
            await asyncio.to_thread(
                publisher.publish, "x", {"i": i}, {"x-tidings-channel": "user#alice"}
            )
        await first.wait_for(5)
        epoch = first.replies[2]["subscribe"]["epoch"]
        last_offset = first.pubs[-1][1]
        await first.stop()
        # Missed while away: published while the client was connected to nobody.
        for i in range(5, 25):
            await asyncio.to_thread(
                publisher.publish, "x", {"i": i}, {"x-tidings-channel": "user#alice"}
            )
        await asyncio.sleep(0.5 * TIME_SCALE)
        async with aiohttp.ClientSession() as http, http.ws_connect(two.ws_url) as ws:
            token = mint_token(SECRET, "alice", ttl=60)
            recover = {"channel": "user#alice", "recover": True}
            recover |= {"offset": last_offset, "epoch": epoch}
            await ws.send_str(
                json.dumps({"id": 1, "connect": {"token": token}})
                + "\n"
                + json.dumps({"id": 2, "subscribe": recover})
            )
            replies: dict[int, dict[str, Any]] = {}
            while len(replies) < 2:
                msg = await ws.receive(timeout=10 * TIME_SCALE)
                for line in msg.data.split("\n"):
                    obj = json.loads(line)
                    if "id" in obj:
                        replies[obj["id"]] = obj
        result = replies[2]["subscribe"]
        assert result["recovered"] is True
        assert result["epoch"] == epoch
        assert [p["data"]["i"] for p in result["publications"]] == list(range(5, 25))
    publisher.close()


async def test_tidings_publish_goes_into_the_exchange(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    exchange, stream = names
    with nodes(tmp_path, 1, *amqp_args(exchange, stream)) as (node,):
        client = Client(node.ws_url, "alice", ["user#alice"])
        await client.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env["TIDINGS_AUTH_HMAC_SECRET"] = SECRET
        done = await asyncio.to_thread(
            subprocess.run,
            [
                TIDINGS,
                "publish",
                "--amqp-url",
                AMQP_URL,
                "--exchange",
                exchange,
                "--channel",
                "user#alice",
                "--data",
                '{"via": "cli"}',
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=30 * TIME_SCALE,
        )
        assert done.returncode == 0, done.stderr
        await client.wait_for(1)
        assert client.pubs[0][0] == "user#alice"
        assert client.pubs[0][2] == {"via": "cli"}
        await client.stop()
