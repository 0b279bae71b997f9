"""Connection and subscription tokens: JWT verification and development minting.

Claims follow the Centrifugo conventions so existing token issuers keep working:
connection tokens carry ``sub``, ``exp`` (or ``expire_at``), ``channels`` (server-side
subscriptions) and ``info``; subscription tokens carry ``channel``, ``sub``, optionally
``client``, ``exp`` and ``info`` (the subscriber's channel info). HMAC (HS256/384/512)
and RSA/ECDSA public keys are accepted; the algorithm family is fixed by the configured
key, so ``alg: none`` and algorithm confusion (an HMAC token signed with the public key's
text) are refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson

from tidings.channels import NameKind, channel_problem, name_problem
from tidings.config import AuthSettings
from tidings.errors import TokenError

__all__ = ["ConnectionClaims", "SubscriptionClaims", "TokenVerifier", "mint_token"]

_HMAC_ALGORITHMS = ["HS256", "HS384", "HS512"]
_PUBLIC_KEY_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"]


@dataclass(frozen=True, slots=True)
class ConnectionClaims:
    """What a verified connection token says."""

    user: str
    #: Unix time when the token expires; 0 when it does not.
    expires_at: int
    channels: tuple[str, ...]
    #: Raw JSON of the ``info`` claim, or None.
    info: bytes | None


@dataclass(frozen=True, slots=True)
class SubscriptionClaims:
    """What a verified subscription token says."""

    channel: str
    user: str
    expires_at: int
    #: Compact JSON of the ``info`` claim: the subscriber's channel info (``chan_info``).
    info: bytes | None = None


class TokenVerifier:
    """Verifies tokens against the configured key, audience and issuer."""

    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.time) -> None:
        self._keys: list[tuple[Any, list[str]]] = []
        if settings.hmac_secret:
            self._keys.append((settings.hmac_secret, _HMAC_ALGORITHMS))
        if settings.public_key:
            pem = settings.public_key
            if "-----BEGIN" not in pem:
                pem = Path(pem).read_text(encoding="utf-8")
            self._keys.append((pem, _PUBLIC_KEY_ALGORITHMS))
        self._audience = settings.audience
        self._issuer = settings.issuer
        self._leeway = settings.leeway
        self._clock = clock

    @property
    def configured(self) -> bool:
        """Whether any key is configured."""
        return bool(self._keys)

    def _decode(self, token: str) -> dict[str, Any]:
        if not token:
            raise TokenError("no token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenError("malformed token") from None
        alg = header.get("alg")
        chosen = next(((k, algs) for k, algs in self._keys if alg in algs), None)
        if chosen is None:
            raise TokenError(f"algorithm {alg!r} is not accepted")
        key, algorithms = chosen
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                # exp is checked here, with expire_at taking precedence (Centrifugo's rule).
                options={"verify_exp": False, "verify_aud": self._audience is not None},
            )
        except jwt.ImmatureSignatureError:
            raise TokenError("token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"missing claim {exc.claim}") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad signature") from None
        except jwt.InvalidKeyError:
            raise TokenError("key does not fit the algorithm") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {type(exc).__name__}") from None
        return claims

    def _expiry(self, claims: dict[str, Any]) -> int:
        # A null expire_at is absent (Centrifugo's rule), so exp still applies.
        raw = claims.get("expire_at")
        if raw is None:
            raw = claims.get("exp")
        if raw is None:
            raw = 0
        # Finite and below 2**53: the SDK reads ttl as a JS number, and int() of inf/NaN raises.
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not abs(raw) < 2**53:
            raise TokenError("exp must be a number of seconds since the epoch")
        expires_at = int(raw)
        if expires_at and expires_at + self._leeway <= self._clock():
            raise TokenError("token expired", expired=True)
        return expires_at

    def connection(self, token: str) -> ConnectionClaims:
        """Verifies a connection token.

        Raises:
            TokenError: with ``expired`` set when only the expiry failed.
        """
        claims = self._decode(token)
        if "channel" in claims:
            raise TokenError("a subscription token cannot open a connection")
        # An empty or missing sub is an anonymous connection (Centrifugo's rule); what it
        # may do is then up to each namespace's allow_anonymous.
        user = claims.get("sub", "")
        if not isinstance(user, str):
            raise TokenError("sub must be a string")
        _check_name("sub", name_problem(user, NameKind.USER))
        expires_at = self._expiry(claims)
        channels = claims.get("channels", [])
        if not isinstance(channels, list):
            raise TokenError("channels must be a list of strings")
        for i, channel in enumerate(channels):
            _check_name(f"channels[{i}]", channel_problem(channel))
        return ConnectionClaims(user, expires_at, tuple(channels), _info(claims))

    def subscription(self, token: str, channel: str, user: str, client: str) -> SubscriptionClaims:
        """Verifies a subscription token for ``channel`` held by ``user`` on ``client``.

        Raises:
            TokenError: with ``expired`` set when only the expiry failed.
        """
        claims = self._decode(token)
        _check_name("channel", channel_problem(claims.get("channel")))
        _check_name("sub", name_problem(claims.get("sub", ""), NameKind.USER))
        if claims.get("channel") != channel:
            raise TokenError("token is for another channel")
        if claims.get("sub", "") != user:
            raise TokenError("token is for another user")
        if claims.get("client") not in (None, "", client):
            raise TokenError("token is for another client")
        return SubscriptionClaims(channel, user, self._expiry(claims), _info(claims))


def _info(claims: dict[str, Any]) -> bytes | None:
    """The ``info`` claim as compact JSON, None when absent.

    Raises:
        TokenError: it cannot be encoded again.
    """
    info = claims.get("info")
    try:
        return None if info is None else orjson.dumps(info)
    except orjson.JSONEncodeError:  # e.g. an integer over 64 bits, valid in JSON
        raise TokenError("info cannot be encoded") from None


def _check_name(claim: str, problem: str | None) -> None:
    """Refuses a token whose claim holds a name that tidings refuses everywhere."""
    if problem is not None:
        raise TokenError(f"claim {claim}: {problem}")


def mint_token(
    secret: str,
    user: str,
    *,
    ttl: float | None = 3600.0,
    channels: Sequence[str] = (),
    info: object = None,
    channel: str | None = None,
    clock: Callable[[], float] = time.time,
) -> str:
    """Signs an HS256 token (connection, or subscription when ``channel`` is given)."""
    now = int(clock())
    claims: dict[str, Any] = {"sub": user, "iat": now}
    if ttl:
        claims["exp"] = now + int(ttl)
    if channels:
        claims["channels"] = list(channels)
    if info is not None:
        claims["info"] = info
    if channel is not None:
        claims["channel"] = channel
    return jwt.encode(claims, secret, algorithm="HS256")
