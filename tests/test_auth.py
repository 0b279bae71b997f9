"""Token verification: claims, expiry, keys, algorithm confusion, audience and issuer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.fakes import SECRET, WALL
from tidings.auth import ConnectionClaims, SubscriptionClaims, TokenVerifier, mint_token
from tidings.config import AuthSettings
from tidings.errors import TokenError

NOW = WALL


def _pem_private(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_public(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> Any:
    return ec.generate_private_key(ec.SECP256R1())


def verifier(clock: float = NOW, **settings: Any) -> TokenVerifier:
    settings.setdefault("hmac_secret", SECRET)
    return TokenVerifier(AuthSettings(**settings), lambda: clock)


def sign(claims: dict[str, Any], key: Any = SECRET, alg: str = "HS256", **headers: Any) -> str:
    payload = {"iat": int(NOW) - 1, **claims}
    return jwt.encode(payload, key, algorithm=alg, headers=headers or None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(claims: dict[str, Any], secret: bytes, alg: str = "HS256") -> str:
    """An HMAC token signed by hand (PyJWT itself refuses a PEM text as HMAC secret)."""
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    digest = {"HS256": hashlib.sha256, "none": None}[alg]
    signing_input = f"{header}.{body}".encode()
    signature = _b64(hmac.new(secret, signing_input, digest).digest()) if digest else ""
    return f"{header}.{body}.{signature}"


def refused(v: TokenVerifier, tok: str, match: str | None = None) -> TokenError:
    with pytest.raises(TokenError, match=match) as info:
        v.connection(tok)
    return info.value


# ---------------------------------------------------------------------------- connection
class TestConnection:
    def test_claims(self) -> None:
        tok = sign({"sub": "alice", "exp": int(NOW) + 60, "channels": ["a", "b"], "info": {"n": 1}})
        assert verifier().connection(tok) == ConnectionClaims(
            "alice", int(NOW) + 60, ("a", "b"), b'{"n":1}'
        )

    def test_minimal(self) -> None:
        assert verifier().connection(sign({"sub": "bob"})) == ConnectionClaims("bob", 0, (), None)

    def test_anonymous_sub(self) -> None:
        assert verifier().connection(sign({"sub": ""})).user == ""

    @pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
    def test_hmac_algorithms(self, alg: str) -> None:
        secret = "k" * 64  # long enough for HS512 (RFC 7518 §3.2)
        tok = sign({"sub": "a"}, key=secret, alg=alg)
        assert verifier(hmac_secret=secret).connection(tok).user == "a"

    def test_expired(self) -> None:
        err = refused(verifier(), sign({"sub": "a", "exp": int(NOW) - 1}), "expired")
        assert err.expired is True

    def test_expiry_uses_the_injected_clock(self) -> None:
        tok = sign({"sub": "a", "exp": int(NOW) + 10})
        assert verifier(clock=NOW + 9).connection(tok).expires_at == int(NOW) + 10
        assert refused(verifier(clock=NOW + 10), tok).expired  # exp is exclusive
        assert refused(verifier(clock=NOW + 11), tok).expired

    def test_leeway(self) -> None:
        tok = sign({"sub": "a", "exp": int(NOW) - 5})
        assert verifier(leeway=10).connection(tok).user == "a"

    def test_not_yet_valid(self) -> None:
        err = refused(verifier(), sign({"sub": "a", "nbf": int(NOW) + 3600}), "not valid yet")
        assert err.expired is False

    def test_nbf_within_leeway(self) -> None:
        tok = sign({"sub": "a", "nbf": int(NOW) + 2})
        assert verifier(leeway=3600).connection(tok).user == "a"

    def test_wrong_signature(self) -> None:
        tok = sign({"sub": "a"}, key="another-secret-0123456789abcdefgh")
        assert not refused(verifier(), tok, "signature").expired

    def test_tampered_payload(self) -> None:
        header, _, signature = sign({"sub": "alice"}).split(".")
        body = _b64(json.dumps({"sub": "admin"}).encode())
        refused(verifier(), f"{header}.{body}.{signature}")

    @pytest.mark.parametrize("tok", ["", "x", "a.b.c", "a.b", "....", "eyJ.eyJ.sig"])
    def test_malformed(self, tok: str) -> None:
        refused(verifier(), tok)

    def test_alg_none(self) -> None:
        refused(verifier(), jwt.encode({"sub": "a"}, None, algorithm="none"), "algorithm")
        refused(verifier(), forge({"sub": "a"}, b"", alg="none"), "algorithm")

    @pytest.mark.parametrize("alg", ["None", "NONE", "HS1", "RS1", "EdDSA", ""])
    def test_unknown_alg_header(self, alg: str) -> None:
        header = _b64(json.dumps({"alg": alg}).encode())
        body = _b64(json.dumps({"sub": "a"}).encode())
        refused(verifier(), f"{header}.{body}.", "algorithm")

    @pytest.mark.parametrize("claims", [{}, {"sub": ""}])
    def test_missing_or_empty_sub_is_anonymous(self, claims: dict[str, Any]) -> None:
        tok = sign({"exp": int(NOW) + 60, **claims})
        assert verifier().connection(tok) == ConnectionClaims("", int(NOW) + 60, (), None)

    @pytest.mark.parametrize("sub", [42, None, False, ["a"], {"a": 1}])
    def test_sub_must_be_a_string(self, sub: Any) -> None:
        refused(verifier(), sign({"sub": sub}), "(?i)sub")

    def test_subscription_token_cannot_connect(self) -> None:
        refused(verifier(), sign({"sub": "a", "channel": "x"}), "subscription")

    @pytest.mark.parametrize("channels", ["news", [1], {"a": 1}, ["a", None]])
    def test_channels_must_be_a_list_of_strings(self, channels: Any) -> None:
        refused(verifier(), sign({"sub": "a", "channels": channels}), "channels")

    @pytest.mark.parametrize(
        ("sub", "match"),
        [
            ("al\x00ice", r"claim sub: user id holds a control character \(U\+0000 at index 2\)"),
            ("\x1b[31m", "claim sub: user id holds a control character"),
            ("\ud800", "claim sub: user id is not valid UTF-8: a lone surrogate"),
            ("x" * 256, "claim sub: user id is 256 bytes long, over the limit of 255"),
        ],
        ids=repr,
    )
    def test_sub_must_be_a_valid_name(self, sub: str, match: str) -> None:
        refused(verifier(), sign({"sub": sub}), match)

    def test_a_user_id_may_hold_spaces_and_any_script(self) -> None:
        assert verifier().connection(sign({"sub": "Zoë 山田"})).user == "Zoë 山田"

    @pytest.mark.parametrize(
        ("channel", "match"),
        [
            ("a\x00", r"claim channels\[1\]: channel name holds a control character"),
            ("\udfff", r"claim channels\[1\]: channel name is not valid UTF-8"),
            ("x" * 256, r"claim channels\[1\]: channel name is 256 bytes long"),
            ("a b", r"claim channels\[1\]: channel name holds whitespace"),
            ("u#", r"claim channels\[1\]: channel name 'u#' has a '#' but names no user"),
        ],
        ids=repr,
    )
    def test_channels_must_be_valid_names(self, channel: str, match: str) -> None:
        refused(verifier(), sign({"sub": "a", "channels": ["news", channel]}), match)

    def test_info_that_cannot_be_reencoded_is_refused(self) -> None:
        # JSON allows any integer; the wire encoder does not: refused, never a crash.
        refused(verifier(), sign({"sub": "a", "info": {"n": 2**70}}), "info")


class TestExpireAt:
    def test_expire_at_overrides_a_past_exp(self) -> None:
        tok = sign({"sub": "a", "exp": int(NOW) - 100, "expire_at": int(NOW) + 100})
        assert verifier().connection(tok).expires_at == int(NOW) + 100

    def test_expire_at_in_the_past_wins_over_a_future_exp(self) -> None:
        tok = sign({"sub": "a", "exp": int(NOW) + 100, "expire_at": int(NOW) - 100})
        assert refused(verifier(), tok).expired

    def test_expire_at_zero_means_never(self) -> None:
        tok = sign({"sub": "a", "exp": int(NOW) - 100, "expire_at": 0})
        assert verifier().connection(tok).expires_at == 0

    def test_null_expire_at_falls_back_to_exp(self) -> None:
        tok = sign({"sub": "a", "exp": int(NOW) - 100, "expire_at": None})
        assert refused(verifier(), tok).expired

    def test_float_expiry(self) -> None:
        tok = sign({"sub": "a", "expire_at": NOW + 100.7})
        assert verifier().connection(tok).expires_at == int(NOW) + 100

    @pytest.mark.parametrize(
        "value", ["soon", True, [1], {"t": 1}, float("inf"), float("nan"), 2**70, -(2**60)]
    )
    @pytest.mark.parametrize("claim", ["exp", "expire_at"])
    def test_expiry_must_be_a_sane_number(self, value: Any, claim: str) -> None:
        # inf/NaN crashed int(); 2**70 crashed the reply encoder later.
        tok = sign({"sub": "a", claim: value})
        with pytest.raises(TokenError, match="number") as info:
            verifier().connection(tok)
        assert not info.value.expired
        with pytest.raises(TokenError, match="number"):
            verifier().subscription(sign({"channel": "$c", claim: value}), "$c", "", "c")

    @pytest.mark.parametrize("value", ["soon", True, [1], {"t": 1}])
    def test_expiry_must_be_a_number(self, value: Any) -> None:
        assert not refused(verifier(), sign({"sub": "a", "expire_at": value}), "number").expired


class TestAudienceIssuer:
    def test_audience(self) -> None:
        v = verifier(audience="tidings")
        assert v.connection(sign({"sub": "a", "aud": "tidings"})).user == "a"
        assert v.connection(sign({"sub": "a", "aud": ["x", "tidings"]})).user == "a"
        refused(v, sign({"sub": "a", "aud": "other"}), "audience")
        refused(v, sign({"sub": "a", "aud": ["x"]}), "audience")
        refused(v, sign({"sub": "a"}), "aud")

    def test_audience_not_configured_ignores_aud(self) -> None:
        assert verifier().connection(sign({"sub": "a", "aud": "whatever"})).user == "a"

    def test_issuer(self) -> None:
        v = verifier(issuer="https://auth.example")
        assert v.connection(sign({"sub": "a", "iss": "https://auth.example"})).user == "a"
        refused(v, sign({"sub": "a", "iss": "https://evil.example"}), "issuer")
        refused(v, sign({"sub": "a"}), "iss")

    def test_both(self) -> None:
        v = verifier(audience="t", issuer="i")
        assert v.connection(sign({"sub": "a", "aud": "t", "iss": "i"})).user == "a"
        refused(v, sign({"sub": "a", "aud": "t", "iss": "j"}))
        refused(v, sign({"sub": "a", "aud": "u", "iss": "i"}))


# ---------------------------------------------------------------------------- public keys
class TestPublicKeys:
    @pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256"])
    def test_rsa(self, rsa_key: Any, alg: str) -> None:
        v = verifier(hmac_secret=None, public_key=_pem_public(rsa_key))
        assert v.connection(sign({"sub": "a"}, _pem_private(rsa_key), alg)).user == "a"

    def test_ec(self, ec_key: Any) -> None:
        v = verifier(hmac_secret=None, public_key=_pem_public(ec_key))
        assert v.connection(sign({"sub": "a"}, _pem_private(ec_key), "ES256")).user == "a"

    def test_key_from_a_file(self, rsa_key: Any, tmp_path: Path) -> None:
        path = tmp_path / "key.pem"
        path.write_text(_pem_public(rsa_key))
        v = verifier(hmac_secret=None, public_key=str(path))
        assert v.connection(sign({"sub": "a"}, _pem_private(rsa_key), "RS256")).user == "a"

    def test_other_rsa_key(self, rsa_key: Any) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        v = verifier(hmac_secret=None, public_key=_pem_public(rsa_key))
        refused(v, sign({"sub": "a"}, _pem_private(other), "RS256"))

    def test_ec_token_against_an_rsa_key(self, rsa_key: Any, ec_key: Any) -> None:
        v = verifier(hmac_secret=None, public_key=_pem_public(rsa_key))
        refused(v, sign({"sub": "a"}, _pem_private(ec_key), "ES256"))

    def test_hs256_signed_with_the_public_pem_is_refused(self, rsa_key: Any) -> None:
        pem = _pem_public(rsa_key)
        v = verifier(hmac_secret=None, public_key=pem)
        refused(v, forge({"sub": "admin"}, pem.encode()), "algorithm")

    def test_confusion_with_both_keys_configured(self, rsa_key: Any) -> None:
        pem = _pem_public(rsa_key)
        v = verifier(public_key=pem)  # HMAC secret and RSA key
        refused(v, forge({"sub": "admin"}, pem.encode()), "signature")
        # Both families still work with their own keys.
        assert v.connection(sign({"sub": "a"})).user == "a"
        assert v.connection(sign({"sub": "b"}, _pem_private(rsa_key), "RS256")).user == "b"

    def test_rs256_when_only_hmac_is_configured(self, rsa_key: Any) -> None:
        refused(verifier(), sign({"sub": "a"}, _pem_private(rsa_key), "RS256"), "algorithm")

    def test_configured(self, rsa_key: Any) -> None:
        assert verifier().configured
        assert verifier(hmac_secret=None, public_key=_pem_public(rsa_key)).configured
        assert not verifier(hmac_secret=None).configured
        refused(verifier(hmac_secret=None), sign({"sub": "a"}), "algorithm")


# ---------------------------------------------------------------------------- subscription
class TestSubscription:
    def test_valid(self) -> None:
        tok = sign({"sub": "alice", "channel": "$c", "exp": int(NOW) + 9})
        assert verifier().subscription(tok, "$c", "alice", "cid") == SubscriptionClaims(
            "$c", "alice", int(NOW) + 9
        )

    def test_bound_to_a_client(self) -> None:
        tok = sign({"sub": "alice", "channel": "$c", "client": "cid"})
        assert verifier().subscription(tok, "$c", "alice", "cid").user == "alice"
        with pytest.raises(TokenError, match="client"):
            verifier().subscription(tok, "$c", "alice", "other")

    def test_empty_client_claim_is_unbound(self) -> None:
        tok = sign({"sub": "alice", "channel": "$c", "client": ""})
        assert verifier().subscription(tok, "$c", "alice", "x").channel == "$c"

    @pytest.mark.parametrize(
        ("claims", "match"),
        [
            ({"sub": "alice", "channel": "$other"}, "channel"),
            ({"sub": "alice"}, "channel"),
            ({"sub": "alice", "channel": None}, "channel"),
            ({"sub": "bob", "channel": "$c"}, "user"),
            ({"channel": "$c"}, "user"),
            ({"sub": "alice", "channel": "$c", "client": 5}, "client"),
            ({"sub": "alice", "channel": "$c\x00"}, "claim channel: channel name holds a control"),
            ({"sub": "alice", "channel": "\ud800"}, "claim channel: channel name is not valid"),
            ({"sub": "alice", "channel": "$" * 256}, "claim channel: channel name is 256 bytes"),
            ({"sub": "alice\x00", "channel": "$c"}, "claim sub: user id holds a control"),
        ],
    )
    def test_refused(self, claims: dict[str, Any], match: str) -> None:
        with pytest.raises(TokenError, match=match):
            verifier().subscription(sign(claims), "$c", "alice", "cid")

    def test_anonymous_subscription_token(self) -> None:
        tok = sign({"channel": "$c"})
        assert verifier().subscription(tok, "$c", "", "cid").user == ""

    def test_expired(self) -> None:
        tok = sign({"sub": "alice", "channel": "$c", "exp": int(NOW) - 1})
        with pytest.raises(TokenError) as info:
            verifier().subscription(tok, "$c", "alice", "cid")
        assert info.value.expired

    def test_audience_applies_too(self) -> None:
        tok = sign({"sub": "alice", "channel": "$c"})
        with pytest.raises(TokenError, match="aud"):
            verifier(audience="t").subscription(tok, "$c", "alice", "cid")


# ---------------------------------------------------------------------------- minting
class TestMint:
    def test_connection_token(self) -> None:
        tok = mint_token(SECRET, "alice", ttl=60, channels=["a"], info={"x": 1}, clock=lambda: NOW)
        assert verifier().connection(tok) == ConnectionClaims(
            "alice", int(NOW) + 60, ("a",), b'{"x":1}'
        )
        assert jwt.get_unverified_header(tok)["alg"] == "HS256"

    @pytest.mark.parametrize("ttl", [None, 0])
    def test_no_expiry(self, ttl: float | None) -> None:
        tok = mint_token(SECRET, "alice", ttl=ttl, clock=lambda: NOW)
        assert verifier().connection(tok).expires_at == 0

    def test_subscription_token(self) -> None:
        tok = mint_token(SECRET, "alice", channel="$c", clock=lambda: NOW)
        claims = verifier().subscription(tok, "$c", "alice", "cid")
        assert (claims.channel, claims.info) == ("$c", None)
        refused(verifier(), tok, "subscription")

    def test_subscription_token_info_is_the_channel_info(self) -> None:
        tok = mint_token(SECRET, "alice", channel="$c", info={"role": "editor"}, clock=lambda: NOW)
        assert verifier().subscription(tok, "$c", "alice", "cid").info == b'{"role":"editor"}'
