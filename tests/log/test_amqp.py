"""The pure parts of the AMQP plumbing: routing checks and stream arguments."""

from __future__ import annotations

from tidings.config import AmqpSettings
from tidings.log.amqp import reaches_stream, stream_arguments


def test_bindings_decide_which_routing_keys_reach_the_stream() -> None:
    topic = AmqpSettings(url="amqp://x", bindings=["invoice.*", "audit.#"])
    assert reaches_stream(topic, "invoice.paid")
    assert reaches_stream(topic, "audit.a.b")
    assert not reaches_stream(topic, "order.created")
    direct = AmqpSettings(url="amqp://x", exchange_type="direct", bindings=["a"])
    assert reaches_stream(direct, "a") and not reaches_stream(direct, "b")
    fanout = AmqpSettings(url="amqp://x", exchange_type="fanout", bindings=["ignored"])
    assert reaches_stream(fanout, "anything")


def test_stream_arguments_round_the_age_up_to_whole_seconds() -> None:
    args = stream_arguments(AmqpSettings(url="amqp://x", stream_max_age=1.5, stream_max_bytes=10))
    assert args == {"x-queue-type": "stream", "x-max-age": "2s", "x-max-length-bytes": 10}
