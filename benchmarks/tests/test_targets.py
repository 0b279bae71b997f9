"""Starting a target never takes over another benchmark's server."""

from __future__ import annotations

import asyncio
import socket

import pytest

from benchmarks.targets import BaselineTarget, TargetUnavailable, TidingsTarget, free_port


def test_a_port_in_use_is_refused_before_the_stream_is_touched() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        target = TidingsTarget("amqp://guest:guest@127.0.0.1:1/", port=busy.getsockname()[1])
        target.executable = target.executable.parent / "python"  # exists; never run

        def delete_stream() -> None:
            pytest.fail("another run's stream deleted")

        target._delete_stream = delete_stream  # type: ignore[method-assign]
        with pytest.raises(TargetUnavailable, match="in use"):
            asyncio.run(target.start(10))
        assert target.proc is None


def test_the_baseline_too() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        target = BaselineTarget("amqp://guest:guest@127.0.0.1:1/")
        target.port = busy.getsockname()[1]
        with pytest.raises(TargetUnavailable, match="in use"):
            asyncio.run(target.start(10))
        assert target.proc is None


def test_a_free_port_is_free() -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        pass
