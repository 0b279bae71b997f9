"""Connecting to a real RabbitMQ: refused logins, unreachable brokers, waiting for one."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.integration.live import free_port
from tests.log.live import (
    HOST,
    PORT,
    SCALE,
    STREAM_PORT,
    Collector,
    Names,
    Proxy,
    make_log,
    until,
)
from tidings.log.rabbitmq import SourceError

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


async def test_wrong_credentials_are_a_source_error(names: Names) -> None:
    log = make_log(names.settings(url=f"amqp://guest:wrong@{HOST}:{PORT}/"))
    with pytest.raises(SourceError, match="refused the login of user 'guest'") as caught:
        await log.start(Collector(), warm_seconds=0)
    assert "wrong" not in str(caught.value)  # the password is never printed


async def test_an_unreachable_broker_fails_fast(names: Names) -> None:
    port = free_port()
    log = make_log(names.settings(url=f"amqp://guest:guest@{HOST}:{port}/"))
    started = time.monotonic()
    with pytest.raises(SourceError, match=f"cannot reach RabbitMQ at .*:{port}"):
        await log.start(Collector(), warm_seconds=0)
    assert time.monotonic() - started < 2 * SCALE


async def test_retry_on_start_waits_for_the_broker(
    names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = Proxy(free_port())
    log = make_log(names.settings(url=proxy.url, retry_on_start=True))
    caplog.set_level(logging.WARNING, logger="tidings.log.rabbitmq")
    starting = asyncio.create_task(log.start(Collector(), warm_seconds=0))
    await asyncio.sleep(1.0 * SCALE)
    assert not starting.done()
    await proxy.start()
    try:
        await asyncio.wait_for(starting, 10 * SCALE)
        assert log.ready
        assert any("attempt 1" in r.getMessage() for r in caplog.records)
    finally:
        await log.close()
        await proxy.close()


async def test_a_dead_first_address_is_passed_for_the_next(names: Names) -> None:
    # Both protocols: the AMQP link and the stream protocol's reader start on the live one.
    dead = free_port()
    settings = names.settings(
        url=f"amqp://guest:guest@{HOST}:{dead}/",
        urls=[f"amqp://guest:guest@{HOST}:{PORT}/"],
        stream_urls=[
            f"rabbitmq-stream://guest:guest@{HOST}:{free_port()}/",
            f"rabbitmq-stream://guest:guest@{HOST}:{STREAM_PORT}/",
        ],
        reader="stream",
    )
    log, got = make_log(settings), Collector()
    await log.start(got, warm_seconds=0)
    try:
        assert log.ready and log.reader == "stream"
        await log.append("k", b"1")
        await until(lambda: got.bodies == [b"1"], what="the record")
    finally:
        await log.close()


async def test_no_reachable_address_names_each(names: Names) -> None:
    ports = [free_port(), free_port()]
    settings = names.settings(urls=[f"amqp://guest:guest@{HOST}:{p}/" for p in ports], url=None)
    with pytest.raises(SourceError) as caught:
        await make_log(settings).start(Collector(), warm_seconds=0)
    assert all(f":{p}" in str(caught.value) for p in ports)
