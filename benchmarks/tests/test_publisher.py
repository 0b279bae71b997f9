"""The raw AMQP publisher's frames, decoded by pamqp (no sockets: the socket side is faked)."""

from __future__ import annotations

import orjson
from pamqp import body, commands, frame, header

from benchmarks.publisher import PublisherConfig, RawAmqpPublisher, _Progress, publish
from benchmarks.workload import user_draws


class _Sink(RawAmqpPublisher):
    """Takes every byte at once instead of writing to a socket."""

    def __init__(self) -> None:
        super().__init__("amqp://guest:guest@127.0.0.1:5672/")
        self.wire = bytearray()

    def pump(self, timeout_s: float = 0.0) -> None:
        if self._out.startswith(self.close_frame):
            self._channel_closed_ok = True  # the broker would answer close-ok
            del self._out[:len(self.close_frame)]
        self.wire += self._out
        self.sent_bytes += len(self._out)
        self._out.clear()

    close_frame = frame.marshal(commands.Channel.Close(
        reply_code=200, reply_text="done", class_id=0, method_id=0), 1)


def _decode(data: bytes) -> list[object]:
    values = []
    while data:
        used, channel, value = frame.unmarshal(bytes(data))
        assert channel == 1
        values.append(value)
        data = data[used:]
    return values


def test_each_event_is_publish_header_body_with_the_channel_header() -> None:
    cfg = PublisherConfig("amqp://x", "bench.tidings", "personal", rate=2000, duration_s=0.1,
                          run_id="run-1", seed=5, index=1, n_users=50)
    conn = _Sink()
    count, _behind, _flush = publish(cfg, conn)
    assert count > 100
    values = _decode(conn.wire)
    assert len(values) == 3 * count
    draws = user_draws(5, 1, 50)
    for seq in range(count):
        method, head, content = values[3 * seq: 3 * seq + 3]
        user = next(draws)
        assert isinstance(method, commands.Basic.Publish)
        assert (method.exchange, method.routing_key) == ("bench.tidings", f"user.{user}")
        assert isinstance(head, header.ContentHeader)
        assert head.properties.headers == {"x-tidings-channel": f"user#{user}"}
        assert head.properties.content_type == "application/json"
        assert isinstance(content, body.ContentBody)
        assert head.body_size == len(content.value)
        event = orjson.loads(content.value)
        assert (event["run"], event["pub"], event["seq"], event["user"]) == ("run-1", 1, seq, user)
        assert isinstance(event["ts"], int)


def test_broadcast_events_go_to_the_bench_channel() -> None:
    cfg = PublisherConfig("amqp://x", "bench.stomp", "broadcast", rate=500, duration_s=0.05,
                          run_id="r", seed=1, index=0, n_users=10)
    conn = _Sink()
    count, _, _ = publish(cfg, conn)
    values = _decode(conn.wire)
    assert count and len(values) == 3 * count
    assert {v.routing_key for v in values[::3]} == {"bench"}  # type: ignore[attr-defined]
    assert {v.properties.headers["x-tidings-channel"] for v in values[1::3]} == {"bench"}  # type: ignore[attr-defined]


def test_progress_counts_only_events_whose_bytes_were_all_taken() -> None:
    progress = _Progress()
    progress.add(100, 2)
    progress.add(250, 5)
    assert progress.update(99) == 0
    assert progress.update(100) == 2
    assert progress.update(249) == 2
    assert progress.update(400) == 5


def test_the_url_is_parsed_like_pikas() -> None:
    conn = RawAmqpPublisher("amqp://u%40x:p%2Fw@10.0.0.1:5673/%2F")
    assert (conn.host, conn.port, conn.user, conn.password, conn.vhost) == (
        "10.0.0.1", 5673, "u@x", "p/w", "/")
    assert RawAmqpPublisher("amqp://guest:guest@127.0.0.1/").vhost == "/"
    assert RawAmqpPublisher("amqp://guest:guest@127.0.0.1/app").vhost == "app"
