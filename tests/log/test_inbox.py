"""The inbox on a real RabbitMQ: what arrives together is handed over together."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from tests.log.live import URL, Collector, Names, make_log

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


@pytest.mark.parametrize("reader", ["auto", "amqp"])
async def test_messages_arriving_together_come_as_one_batch(names: Names, reader: str) -> None:
    setup = make_log(names.settings())
    await setup.start(Collector(), warm_seconds=0)
    await setup.close()
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(names.exchange, ensure=False)
        # Published together, they are written together: a few stream chunks.
        await asyncio.gather(
            *(exchange.publish(aio_pika.Message(b"%d" % i), routing_key="k") for i in range(2000))
        )
    log, got = make_log(names.settings(reader=reader)), Collector()
    await log.start(got, warm_seconds=60)  # the backlog arrives as fast as it can
    try:
        assert got.bodies == [b"%d" % i for i in range(2000)]
        # aiormq hands over a few messages per read of its channel (a 10-frame buffer),
        # the stream protocol a chunk at a time; either comes as one batch: well under
        # one call per record.
        assert got.batches <= 2000 * 0.8, "records were handed over one by one"
    finally:
        await log.close()
