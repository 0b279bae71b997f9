"""Cross-site checks on WebSocket upgrades and event streams."""

from __future__ import annotations

import pytest

from tidings.transport.origin import origin_allowed


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        # no Origin: not a browser
        (None, "example.com", [], True),
        (None, None, ["https://a.example"], True),
        # wildcard
        ("https://evil.example", "example.com", ["*"], True),
        ("null", "example.com", ["https://a.example", "*"], True),
        # allow-list
        ("https://a.example", "example.com", ["https://a.example"], True),
        ("https://A.example/", "example.com", ["https://a.example/"], True),
        ("https://a.example:8443", "example.com", ["https://a.example"], False),
        ("http://a.example", "example.com", ["https://a.example"], False),
        (
            "https://example.com",
            "example.com",
            ["https://a.example"],
            False,
        ),  # list excludes same-origin
        ("null", "example.com", ["https://a.example"], False),
        # same origin
        ("http://example.com", "example.com", [], True),
        ("http://example.com", "example.com:80", [], True),
        ("http://example.com:80", "example.com", [], True),
        ("https://example.com", "example.com:443", [], True),
        ("https://example.com", "example.com", [], True),
        ("http://Example.COM:8888", "example.com:8888", [], True),
        ("http://127.0.0.1:8888", "127.0.0.1:8888", [], True),
        ("http://[::1]:8888", "[::1]:8888", [], True),
        ("http://[::1]", "[::1]:80", [], True),
        ("http://example.com:8888", "example.com:8889", [], False),
        ("https://example.com", "example.com:80", [], False),
        ("http://example.com", "example.com:443", [], False),
        ("http://evil.example", "example.com", [], False),
        ("http://example.com.evil.example", "example.com", [], False),
        ("http://user@example.com", "example.com", [], False),
        ("null", "example.com", [], False),
        ("http://example.com", None, [], False),
        ("http://example.com", "", [], False),
        ("file://example.com", "example.com", [], False),
        ("chrome-extension://abc", "abc", [], False),
        ("example.com", "example.com", [], False),
        ("", "example.com", [], False),
    ],
)
def test_origin_allowed(
    origin: str | None, host: str | None, allowed: list[str], expected: bool
) -> None:
    assert origin_allowed(origin, host, allowed) is expected
