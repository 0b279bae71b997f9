"""Forged, stale and misdirected tokens are refused with the documented code, and the
node's log never holds the token that was refused (nor its payload or signature)."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.security.wire import (
    AUDIENCE,
    ISSUER,
    assert_not_logged,
    claims,
    connected,
    hmac_with,
    open_ws,
    refused_with,
    sign,
    unsigned,
)
from tests.system.harness import Node

pytestmark = pytest.mark.integration

WRONG_SECRET = "not-the-secret-of-this-node-0123456789"


async def _refused_3500(http: aiohttp.ClientSession, node: Node, token: str, why: str) -> None:
    code, _reason = await refused_with(http, node, token)
    assert code == 3500, f"{why}: closed with {code}"
    assert_not_logged(node, token)
    # The refusal itself is logged (so the log was being written), without the token.
    assert "connection refused" in node.log_text()


# --------------------------------------------------------------------- connection tokens
async def test_wrong_signature(http: aiohttp.ClientSession, node: Node) -> None:
    await _refused_3500(http, node, sign(claims(), WRONG_SECRET), "wrong key")
    good = sign(claims())
    header, payload, signature = good.split(".")
    tampered_payload = sign(claims("mallory")).split(".")[1]
    await _refused_3500(
        http, node, f"{header}.{tampered_payload}.{signature}", "payload swapped under a signature"
    )
    await _refused_3500(http, node, f"{header}.{payload}.{signature[:-4]}AAAA", "signature edited")


async def test_alg_none(http: aiohttp.ClientSession, node: Node) -> None:
    await _refused_3500(http, node, unsigned(claims()), "alg none")
    # The same with a signature left on, and with the header's case changed.
    await _refused_3500(http, node, unsigned(claims()) + "c2ln", "alg none, signature kept")
    forged = unsigned(claims()).replace(unsigned(claims()).split(".")[0], "eyJhbGciOiJOb25lIn0")
    await _refused_3500(http, node, forged, "alg None")


async def test_algorithm_confusion_with_only_a_public_key(
    http: aiohttp.ClientSession, rsa_node: Node, rsa_keys: tuple[str, str]
) -> None:
    private, public = rsa_keys
    # The real thing works: the key fixes the algorithm family, it does not forbid the key.
    good = await connected(http, rsa_node, sign(claims(), private, "RS256"))
    await good.ws.close()
    # HS256 "signed" with the public key's PEM text, as an attacker who read it would.
    await _refused_3500(http, rsa_node, hmac_with(public, claims()), "HS256 with the PEM text")
    await _refused_3500(http, rsa_node, hmac_with(public.strip(), claims()), "PEM text stripped")
    await _refused_3500(http, rsa_node, unsigned(claims()), "alg none on a public-key node")


async def test_algorithm_confusion_with_a_secret_and_a_public_key(
    http: aiohttp.ClientSession, mixed_node: Node, rsa_keys: tuple[str, str]
) -> None:
    _private, public = rsa_keys
    await _refused_3500(http, mixed_node, hmac_with(public, claims()), "HS256 with the PEM text")


async def test_expired_connection_token_is_error_109(
    http: aiohttp.ClientSession, node: Node
) -> None:
    token = sign(claims(ttl=-60))
    client = await open_ws(http, node)
    await client.send({"id": 1, "connect": {"token": token}})
    reply = await client.message(timeout=3)
    assert reply["id"] == 1
    assert reply["error"]["code"] == 109, reply
    # The SDK fetches a fresh token and connects again on the same socket.
    await client.send({"id": 2, "connect": {"token": sign(claims())}})
    assert "client" in (await client.message(timeout=3))["connect"]
    # expire_at takes precedence over exp (Centrifugo's rule): a stale one cannot hide.
    stale = sign(claims(expire_at=int(time.time()) - 60, exp=int(time.time()) + 3600))
    again = await open_ws(http, node)
    await again.send({"id": 1, "connect": {"token": stale}})
    assert (await again.message(timeout=3))["error"]["code"] == 109
    assert_not_logged(node, token, stale)


async def test_not_yet_valid(http: aiohttp.ClientSession, node: Node) -> None:
    await _refused_3500(http, node, sign(claims(nbf=int(time.time()) + 600)), "nbf in the future")


async def test_missing_sub_is_anonymous_and_gets_no_further(
    http: aiohttp.ClientSession, node: Node
) -> None:
    # Centrifugo's rule: a valid token without sub is an anonymous connection, which may
    # subscribe only where a namespace allows anonymous clients (none here).
    client = await connected(http, node, sign(claims(user=None)))
    await client.send({"id": 2, "subscribe": {"channel": "news"}})
    replies = await client.frame(timeout=3)
    assert replies == [{"id": 2, "error": {"code": 103, "message": "permission denied"}}]
    await _refused_3500(http, node, sign(claims(user=None) | {"sub": 42}), "sub not a string")


async def test_a_subscription_token_cannot_open_a_connection(
    http: aiohttp.ClientSession, node: Node
) -> None:
    await _refused_3500(http, node, sign(claims(channel="news")), "subscription token")


async def test_wrong_audience_and_issuer(http: aiohttp.ClientSession, claims_node: Node) -> None:
    right = {"aud": AUDIENCE, "iss": ISSUER}
    good = await connected(http, claims_node, sign(claims(**right)))
    await good.ws.close()
    for why, extra in [
        ("wrong audience", {"aud": "another-app", "iss": ISSUER}),
        ("no audience", {"iss": ISSUER}),
        ("wrong issuer", {"aud": AUDIENCE, "iss": "https://evil.example"}),
        ("no issuer", {"aud": AUDIENCE}),
    ]:
        await _refused_3500(http, claims_node, sign(claims(**extra)), why)


async def test_garbage_tokens(http: aiohttp.ClientSession, node: Node) -> None:
    for token in ["", "x", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", "." * 3, "ey" * 500]:
        code, _ = await refused_with(http, node, token)
        assert code == 3500, (token[:20], code)


async def test_a_token_inside_a_malformed_frame_is_not_logged(
    http: aiohttp.ClientSession, node: Node
) -> None:
    token = sign(claims("frame-user"))
    client = await open_ws(http, node)
    await client.ws.send_str('{"id":1,"connect":{"token":"' + token + '"}')  # missing brace
    assert (await client.closed(timeout=3))[0] == 3501
    assert_not_logged(node, token)


async def test_a_token_in_the_event_stream_url_is_not_logged(
    http: aiohttp.ClientSession, node: Node
) -> None:
    token = sign(claims("sse-user"), WRONG_SECRET)
    async with http.get(f"{node.url}/events", params={"token": token}) as r:
        assert r.status == 401
    async with http.get(f"{node.url}/events", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 401
    # A request line too long for the server, carrying the token.
    async with http.get(f"{node.url}/events", params={"token": token, "pad": "x" * 9000}) as r:
        assert r.status >= 400
    assert_not_logged(node, token)


# ------------------------------------------------------------------- subscription tokens
async def _subscribe(http: aiohttp.ClientSession, node: Node, user: str, sub: dict) -> dict:
    client = await connected(http, node, sign(claims(user)))
    await client.send({"id": 9, "subscribe": sub})
    reply = await client.message(timeout=3)
    await client.ws.close()
    return reply


async def test_subscription_token_for_another_channel(
    http: aiohttp.ClientSession, node: Node
) -> None:
    token = sign(claims("alice", channel="private:other"))
    reply = await _subscribe(http, node, "alice", {"channel": "private:mine", "token": token})
    assert reply["error"]["code"] == 103, reply
    assert_not_logged(node, token)


async def test_subscription_token_for_another_user(http: aiohttp.ClientSession, node: Node) -> None:
    token = sign(claims("bob", channel="private:room"))
    reply = await _subscribe(http, node, "alice", {"channel": "private:room", "token": token})
    assert reply["error"]["code"] == 103, reply
    # And for another client of the same user.
    other_client = sign(claims("alice", channel="private:room", client="someone-elses-client"))
    reply = await _subscribe(
        http, node, "alice", {"channel": "private:room", "token": other_client}
    )
    assert reply["error"]["code"] == 103, reply
    assert_not_logged(node, token, other_client)


async def test_subscription_token_forged(http: aiohttp.ClientSession, node: Node) -> None:
    for token in [
        sign(claims("alice", channel="private:room"), WRONG_SECRET),
        unsigned(claims("alice", channel="private:room")),
    ]:
        reply = await _subscribe(http, node, "alice", {"channel": "private:room", "token": token})
        assert reply["error"]["code"] == 103, reply
        assert_not_logged(node, token)


async def test_expired_subscription_token_is_error_109(
    http: aiohttp.ClientSession, node: Node
) -> None:
    token = sign(claims("alice", ttl=-60, channel="private:room"))
    reply = await _subscribe(http, node, "alice", {"channel": "private:room", "token": token})
    assert reply["error"]["code"] == 109, reply
    assert_not_logged(node, token)


async def test_a_valid_subscription_token_works(http: aiohttp.ClientSession, node: Node) -> None:
    token = sign(claims("alice", channel="private:room"))
    reply = await _subscribe(http, node, "alice", {"channel": "private:room", "token": token})
    assert "subscribe" in reply, reply
