"""A subscriber's ClientInfo: its JSON and reading it back."""

from __future__ import annotations

import orjson
import pytest

from tidings.clientinfo import ClientInfo

A1 = ClientInfo("alice", "c-a1", b'{"name":"Alice"}')
A2 = ClientInfo("alice", "c-a2")
B1 = ClientInfo("bob", "c-b1", None, b'{"role":"viewer"}')
ANON = ClientInfo("", "c-anon")


class TestClientInfo:
    def test_json_has_info_fields_only_when_set(self) -> None:
        assert A2.to_json() == b'{"user":"alice","client":"c-a2"}'
        assert orjson.loads(A1.to_json()) == {
            "user": "alice",
            "client": "c-a1",
            "conn_info": {"name": "Alice"},
        }
        assert orjson.loads(orjson.dumps(B1.to_obj())) == orjson.loads(B1.to_json())

    def test_round_trip(self) -> None:
        for info in (A1, A2, B1, ANON):
            assert ClientInfo.from_obj(orjson.loads(info.to_json())) == info

    @pytest.mark.parametrize(
        "obj", [None, [], {"user": "a"}, {"user": 1, "client": "c"}, {"client": ""}]
    )
    def test_malformed(self, obj: object) -> None:
        with pytest.raises(ValueError):
            ClientInfo.from_obj(obj)
