"""The topology: which routing keys reach the stream, its arguments, and the checks of
what exists on a real broker."""

from __future__ import annotations

import aio_pika
import pytest

from tests.log.live import URL, Collector, Names, make_log
from tidings.config import AmqpSettings
from tidings.log.rabbitmq import SourceError
from tidings.log.topology import reaches_stream, stream_arguments


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


def test_stream_replicas_become_the_initial_cluster_size() -> None:
    args = stream_arguments(AmqpSettings(url="amqp://x", stream_replicas=3))
    assert args["x-initial-cluster-size"] == 3
    assert "x-initial-cluster-size" not in stream_arguments(AmqpSettings(url="amqp://x"))


@pytest.mark.rabbitmq
@pytest.mark.integration
async def test_an_exchange_of_another_type_is_refused_with_a_clear_message(names: Names) -> None:
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    log = make_log(names.settings(exchange_type="topic"))
    with pytest.raises(SourceError) as caught:
        await log.start(Collector(), warm_seconds=0)
    message = str(caught.value)
    assert names.exchange in message and "amqp.exchange_type = 'topic'" in message
    assert "fanout" in message and "\n" not in message
    assert not log.ready

@pytest.mark.rabbitmq
@pytest.mark.integration
async def test_a_missing_exchange_is_refused_when_tidings_may_not_declare_it(
    names: Names,
) -> None:
    log = make_log(names.settings(declare_exchange=False))
    with pytest.raises(SourceError, match=r"does not exist.*amqp\.declare_exchange"):
        await log.start(Collector(), warm_seconds=0)

@pytest.mark.rabbitmq
@pytest.mark.integration
async def test_a_stream_with_other_retention_is_refused(names: Names) -> None:
    first = make_log(names.settings(stream_max_age=3600.0))
    await first.start(Collector(), warm_seconds=0)
    await first.close()
    log = make_log(names.settings(stream_max_age=7200.0))
    with pytest.raises(SourceError, match=r"amqp.stream_max_age.*delete the queue"):
        await log.start(Collector(), warm_seconds=0)


@pytest.mark.rabbitmq
@pytest.mark.integration
async def test_a_stream_declared_with_another_replica_count_is_refused(names: Names) -> None:
    # RabbitMQ compares x-initial-cluster-size like the retention, even on one node.
    first = make_log(names.settings())
    await first.start(Collector(), warm_seconds=0)
    await first.close()
    log = make_log(names.settings(stream_replicas=3))
    with pytest.raises(SourceError, match=r"x-initial-cluster-size 3 \(amqp.stream_replicas\)"):
        await log.start(Collector(), warm_seconds=0)
