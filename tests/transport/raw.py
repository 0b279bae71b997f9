"""A bare TCP client for the transport tests: HTTP heads and WebSocket frames as bytes."""

from __future__ import annotations

import asyncio
import base64
import os

import orjson

from tests.integration.live import scaled
from tests.protocol.test_wsframes import frame
from tidings.protocol.wsframes import Opcode

__all__ = ["RawConnection", "frame", "upgrade_head"]


def upgrade_head(
    port: int,
    path: str = "/connection/websocket",
    key: str | None = None,
    extra: str = "",
    **fields: str | None,
) -> bytes:
    """An upgrade request; ``fields`` replace (or, with None, drop) the standard headers."""
    headers: dict[str, str | None] = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key or base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    headers.update({k.replace("_", "-"): v for k, v in fields.items()})
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


class RawConnection:
    """One TCP connection to a server, read and written as raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_commands(self, *commands: object, **kwargs: object) -> None:
        """``commands`` newline-joined in one masked text frame."""
        payload = b"\n".join(orjson.dumps(c) for c in commands)
        await self.send(frame(Opcode.TEXT, payload, **kwargs))  # type: ignore[arg-type]

    async def response(self, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
        """The next HTTP response: status, headers (lower-case names) and body."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), scaled(timeout))
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), scaled(timeout))
        return status, headers, body

    async def frame(self, timeout: float = 2.0) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload); server frames are final and unmasked."""

        async def read() -> tuple[int, bytes]:
            first, second = await self.reader.readexactly(2)
            assert first & 0x80 and not first & 0x70, hex(first)
            assert not second & 0x80, "server frames are never masked"
            n = second & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            return first & 0x0F, await self.reader.readexactly(n)

        return await asyncio.wait_for(read(), scaled(timeout))

    async def message(self, timeout: float = 2.0) -> object:
        """The next frame, a text frame holding one JSON message."""
        opcode, payload = await self.frame(timeout)
        assert opcode == Opcode.TEXT, (opcode, payload)
        return orjson.loads(payload)

    async def close_frame(self, timeout: float = 2.0) -> tuple[int | None, str]:
        """Skips to the server's close frame; returns its code and reason."""
        while True:
            opcode, payload = await self.frame(timeout)
            if opcode == Opcode.CLOSE:
                code = int.from_bytes(payload[:2], "big") if payload else None
                return code, payload[2:].decode()

    async def eof(self, timeout: float = 2.0) -> bool:
        """Whether the server closes the connection within ``timeout`` (reading past data)."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), scaled(timeout)):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()
