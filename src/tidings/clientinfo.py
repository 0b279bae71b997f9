"""A subscriber as the client protocol shows it (``ClientInfo``): in presence replies,
``join``/``leave`` pushes, publications' ``info``, and the control messages workers send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["ClientInfo"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One subscriber as the protocol shows it (``ClientInfo`` of the client protocol).

    Attributes:
        user: the connection's user ("" for anonymous).
        client: the connection's client id (unique in the cluster).
        conn_info: compact JSON of the connection token's ``info`` claim, or None.
        chan_info: compact JSON of channel-specific info, or None.
    """

    user: str
    client: str
    conn_info: bytes | None = None
    chan_info: bytes | None = None

    def to_json(self) -> bytes:
        """``{"user":…,"client":…,"conn_info":…,"chan_info":…}`` (info fields when set)."""
        out = b'{"user":%b,"client":%b' % (orjson.dumps(self.user), orjson.dumps(self.client))
        if self.conn_info is not None:
            out += b',"conn_info":%b' % self.conn_info
        if self.chan_info is not None:
            out += b',"chan_info":%b' % self.chan_info
        return out + b"}"

    def to_obj(self) -> dict[str, Any]:
        """The same as plain data."""
        obj: dict[str, Any] = {"user": self.user, "client": self.client}
        if self.conn_info is not None:
            obj["conn_info"] = orjson.Fragment(self.conn_info)
        if self.chan_info is not None:
            obj["chan_info"] = orjson.Fragment(self.chan_info)
        return obj

    @classmethod
    def from_obj(cls, obj: object) -> ClientInfo:
        """Reads a decoded ``ClientInfo`` object.

        Raises:
            ValueError: it is not an object with string ``user`` and non-empty ``client``.
        """
        if not isinstance(obj, dict):
            raise ValueError("client info must be an object")
        user, client = obj.get("user", ""), obj.get("client")
        if not isinstance(user, str) or not isinstance(client, str) or not client:
            raise ValueError("client info needs a string user and a non-empty client")
        conn, chan = obj.get("conn_info"), obj.get("chan_info")
        return cls(
            user,
            client,
            None if conn is None else orjson.dumps(conn),
            None if chan is None else orjson.dumps(chan),
        )
