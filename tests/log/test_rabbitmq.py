"""RabbitMqLog against a real RabbitMQ: the Log interface end to end, appending and
positions. The parts it is made of have tests of their own beside this file.
"""

from __future__ import annotations

import time

import pytest

from tests.log.live import Collector, Names, make_log, publish, until
from tidings.log.rabbitmq import SourceError

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


async def test_append_comes_back_through_the_stream_in_position_order(names: Names) -> None:
    log, got = make_log(names.settings()), Collector()
    await log.start(got, warm_seconds=60)
    try:
        assert log.ready and log.epoch
        before = time.time()
        for i in range(20):
            await log.append("invoice.created", b'{"n": %d}' % i, {"account_id": "42"})
        await until(lambda: len(got.records) == 20, what="20 records")
        assert got.bodies == [b'{"n": %d}' % i for i in range(20)]
        assert got.positions == sorted(set(got.positions))
        first = got.records[0]
        assert first.routing_key == "invoice.created"
        assert first.headers == {"account_id": "42"}  # the stream's offset header is not kept
        assert before - 1 <= first.timestamp <= time.time() + 1
        assert log.last_position == got.positions[-1]
        assert log.last_record_time == got.records[-1].timestamp
    finally:
        await log.close()
    await log.close()  # idempotent
    assert not log.ready


async def test_append_refuses_a_routing_key_the_bindings_do_not_take(names: Names) -> None:
    log = make_log(names.settings(bindings=["invoice.*"]))
    await log.start(Collector(), warm_seconds=0)
    try:
        with pytest.raises(SourceError, match=r"matches none of amqp\.bindings"):
            await log.append("order.created", b"{}")
        await log.append("invoice.sent", b"{}")
    finally:
        await log.close()


async def test_append_works_without_start_for_a_process_that_only_publishes(
    names: Names,
) -> None:
    log, got = make_log(names.settings()), Collector()
    await log.start(got, warm_seconds=0)
    publisher = make_log(names.settings())
    try:
        await publisher.append("k", b"from the command line")
        await until(lambda: got.bodies == [b"from the command line"], what="the record")
    finally:
        await publisher.close()
        await log.close()
    with pytest.raises(RuntimeError):
        await publisher.append("k", b"after close")


async def test_two_logs_on_one_stream_see_the_same_positions(names: Names) -> None:
    a, b = make_log(names.settings()), make_log(names.settings())
    got_a, got_b = Collector(), Collector()
    await a.start(got_a, warm_seconds=60)
    await b.start(got_b, warm_seconds=60)
    try:
        assert a.epoch == b.epoch
        await publish(names.exchange, [(f"k.{i}", b"%d" % i) for i in range(50)])
        await until(lambda: len(got_a.records) == len(got_b.records) == 50, what="50 each")
        assert [(r.position, r.body) for r in got_a.records] == [
            (r.position, r.body) for r in got_b.records
        ]
    finally:
        await a.close()
        await b.close()
