"""Publisher process: send timestamped, numbered JSON events to the exchange at a fixed rate.

aio-pika publishes only ~6,500 msg/s on this machine, so this uses pika's BlockingConnection
(no confirms: the bench measures the gateway, and the loadgen detects any loss end to end).
Several processes run side by side for higher rates. JSON lines on stdio, like the loadgen:

- argv[1] is the :class:`PublisherConfig` as JSON;
- it prints ``{"phase": "ready"}`` once connected, waits for any line on stdin, publishes for
  ``duration_s`` (printing ``{"phase": "progress", "published": N}`` every second) and prints
  ``{"phase": "done", "published": N, ...}``.

Each body is ``{"run", "pub", "seq", "ts", "user", "pad"}``: ``ts`` is ``time.time_ns()`` at
publish, ``seq`` counts from 0 per publisher, ``user`` is the addressee (null for broadcast).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import orjson
import pika

from benchmarks.adapters import channel_for, routing_key_for
from benchmarks.workload import user_draws

__all__ = ["PublisherConfig", "main"]

# Publishing in 5 ms slices keeps the rate even without a sleep per message.
_TICK_S = 0.005


@dataclasses.dataclass(frozen=True)
class PublisherConfig:
    """Everything one publisher process needs; passed as JSON on the command line."""

    amqp_url: str
    exchange: str
    workload: str
    rate: float
    duration_s: float
    run_id: str
    seed: int
    index: int
    n_users: int
    payload_bytes: int = 64


def publish(cfg: PublisherConfig, channel: pika.adapters.blocking_connection.BlockingChannel
            ) -> tuple[int, float]:
    """Publish for ``cfg.duration_s`` at ``cfg.rate``; return (count, seconds behind at the end)."""
    draws = user_draws(cfg.seed, cfg.index, cfg.n_users)
    pad = "x" * cfg.payload_bytes
    props: dict[str, pika.BasicProperties] = {}
    # Bounded batches: a publisher that cannot keep up still stops on time.
    batch_cap = max(1, int(cfg.rate * 10 * _TICK_S))
    seq = 0
    start = time.monotonic()
    end = start + cfg.duration_s
    next_report = start + 1.0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_report:
            # The orchestrator keeps the last count, in case the broker blocks us for good.
            _say({"phase": "progress", "published": seq})
            next_report += 1.0
        due = int((now - start) * cfg.rate)
        if seq >= due:
            time.sleep(_TICK_S)
            continue
        for _ in range(min(due - seq, batch_cap)):
            user = next(draws) if cfg.workload == "personal" else None
            ch = channel_for(user)
            prop = props.get(ch)
            if prop is None:
                prop = props[ch] = pika.BasicProperties(
                    content_type="application/json", headers={"x-tidings-channel": ch}
                )
            body = orjson.dumps(
                {"run": cfg.run_id, "pub": cfg.index, "seq": seq, "ts": time.time_ns(),
                 "user": user, "pad": pad}
            )
            channel.basic_publish(cfg.exchange, routing_key_for(user), body, prop)
            seq += 1
    behind = max(0.0, cfg.rate * cfg.duration_s - seq) / cfg.rate if cfg.rate else 0.0
    return seq, behind


def _say(record: dict[str, object]) -> None:
    print(orjson.dumps(record).decode(), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m benchmarks.publisher '<PublisherConfig JSON>'``."""
    args = sys.argv[1:] if argv is None else argv
    cfg = PublisherConfig(**orjson.loads(args[0]))
    connection = pika.BlockingConnection(pika.URLParameters(cfg.amqp_url))
    channel = connection.channel()
    _say({"phase": "ready"})
    sys.stdin.readline()
    cpu0, wall0 = time.process_time(), time.monotonic()
    count, behind = publish(cfg, channel)
    # close() flushes what is still buffered; under broker flow control that takes long,
    # and is part of the publishing time.
    flush0 = time.monotonic()
    connection.close()
    _say({
        "phase": "done",
        "published": count,
        "behind_s": round(behind, 3),
        "flush_s": round(time.monotonic() - flush0, 3),
        "cpu_s": round(time.process_time() - cpu0, 3),
        "wall_s": round(time.monotonic() - wall0, 3),
    })


if __name__ == "__main__":
    main()
