"""Child processes that speak JSON lines on stdio (load generators and publishers)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

__all__ = ["Child", "ChildFailed", "read_all"]


class ChildFailed(Exception):
    """A child exited, or did not answer in time."""


class Child:
    """One ``python -m benchmarks.<module> '<config JSON>'`` process."""

    def __init__(self, proc: asyncio.subprocess.Process, label: str) -> None:
        self.proc = proc
        self.label = label

    @classmethod
    async def spawn(cls, module: str, config: dict[str, Any], label: str) -> Child:
        """Start ``python -m benchmarks.<module>`` with ``config`` as its only argument."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"benchmarks.{module}", orjson.dumps(config).decode(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            # Limits for one line: a loadgen result carries a latency histogram of a few kB.
            limit=16 * 1024 * 1024,
        )
        return cls(proc, label)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    async def read(self, timeout_s: float) -> dict[str, Any]:
        """Read the next JSON line.

        Raises:
            ChildFailed: the child closed its stdout or said nothing for ``timeout_s``.
        """
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        except TimeoutError as exc:
            raise ChildFailed(f"{self.label}: no answer in {timeout_s:.0f} s") from exc
        if not line:
            raise ChildFailed(f"{self.label}: exited with {await self.proc.wait()}")
        record: dict[str, Any] = orjson.loads(line)
        return record

    def send(self, message: dict[str, Any] | str) -> None:
        """Write one line (a JSON object, or a plain word) to the child's stdin."""
        assert self.proc.stdin is not None
        data = message.encode() if isinstance(message, str) else orjson.dumps(message)
        self.proc.stdin.write(data + b"\n")

    async def close(self) -> None:
        """Make sure the child is gone: wait briefly, then kill it."""
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def read_all(children: list[Child], timeout_s: float) -> list[dict[str, Any]]:
    """Read the next line of every child concurrently."""
    return list(await asyncio.gather(*(c.read(timeout_s) for c in children)))
