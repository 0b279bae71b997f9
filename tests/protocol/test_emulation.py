"""Emulation requests (pure decoding) and the ids an emulated session hands out."""

from __future__ import annotations

import orjson
import pytest

from tests.fakes import T0, WALL, FakeHost, Sink, token
from tidings.protocol.emulation import (
    MAX_ID_LENGTH,
    BadEmulationRequest,
    EmulationRequest,
    decode_emulation_request,
    encode,
)
from tidings.protocol.session import EmulationIds, Session


def test_a_request_decodes_to_its_frame_bytes() -> None:
    frame = '{"id":2,"subscribe":{"channel":"news"}}\n{"id":3,"ping":{}}'
    body = orjson.dumps({"node": "w1", "session": "s", "data": frame, "extra": 1})
    assert decode_emulation_request(body, 1000) == EmulationRequest("w1", "s", frame.encode())


def test_encode_round_trips() -> None:
    request = EmulationRequest("w1.abc", "Zx_-9", '{"id":1,"x":"é"}'.encode())
    assert decode_emulation_request(encode(request), 1000) == request


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{", "not JSON"),
        (b'"x"', "JSON object"),
        (b'{"session":"s","data":""}', "node must be"),
        (b'{"node":"n","session":null,"data":""}', "session must be"),
        (b'{"node":"n","session":"s","data":{}}', "data must be"),
        (b'{"node":"n","session":"s\\n","data":""}', "session is not"),
        (b'{"node":"\xc3\xa9","session":"s","data":""}', "node is not"),
        (b'{"node":"n","session":"s","data":"\\ud800"}', "not JSON"),
    ],
)
def test_bad_requests_say_what_is_wrong(body: bytes, problem: str) -> None:
    with pytest.raises(BadEmulationRequest, match=problem):
        decode_emulation_request(body, 1000)


def test_ids_and_data_have_limits() -> None:
    long_id = orjson.dumps({"node": "n" * (MAX_ID_LENGTH + 1), "session": "s", "data": ""})
    with pytest.raises(BadEmulationRequest, match="node"):
        decode_emulation_request(long_id, 1000)
    big = orjson.dumps({"node": "n", "session": "s", "data": "é" * 6})  # 12 bytes
    with pytest.raises(BadEmulationRequest, match="over 11 bytes"):
        decode_emulation_request(big, 11)
    assert decode_emulation_request(big, 12).data == "é".encode() * 6


def _connect_result(host: FakeHost, emulation: EmulationIds | None) -> dict[str, object]:
    session = Session(
        host, Sink("emu"), host.settings.client, T0, wall_clock=WALL, emulation=emulation
    )
    session.receive(orjson.dumps({"id": 1, "connect": {"token": token()}}), T0)
    (reply,) = [orjson.loads(m) for m in session.take_output()]
    result: dict[str, object] = reply["connect"]
    return result


def test_an_emulated_session_hands_out_its_ids_in_the_connect_result() -> None:
    result = _connect_result(FakeHost(), EmulationIds("s3cr3t", "worker-1"))
    assert (result["session"], result["node"]) == ("s3cr3t", "worker-1")
    assert result["pong"] is True


def test_other_sessions_have_none() -> None:
    result = _connect_result(FakeHost(), None)
    assert "session" not in result and "node" not in result
