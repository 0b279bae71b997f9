"""Channel names and the subscribe permission truth table."""

from __future__ import annotations

import itertools

import pytest

from tidings.channels import MAX_CHANNEL_LENGTH, ChannelName, check_subscribe, parse_channel
from tidings.codes import ErrorCode
from tidings.config import ChannelOptions


class TestParse:
    @pytest.mark.parametrize(
        ("name", "namespace", "users", "private"),
        [
            ("news", "", set(), False),
            ("ns:news", "ns", set(), False),
            ("ns:a:b", "ns", set(), False),
            (":news", "", set(), False),
            ("user#alice", "", {"alice"}, False),
            ("dialog#alice,bob", "", {"alice", "bob"}, False),
            ("dialog#alice,,bob,", "", {"alice", "bob"}, False),
            ("ns:user#42", "ns", {"42"}, False),
            ("a#b#carol", "", {"carol"}, False),
            ("$secret", "", set(), True),
            ("ns:$secret", "ns", set(), True),
            ("$ns:secret", "$ns", set(), False),
            ("ns:$room#alice", "ns", {"alice"}, True),
            ("x" * MAX_CHANNEL_LENGTH, "", set(), False),
        ],
    )
    def test_parse(self, name: str, namespace: str, users: set[str], private: bool) -> None:
        parsed = parse_channel(name)
        assert parsed == ChannelName(name, namespace, frozenset(users), private)
        assert parsed.user_limited is bool(users)

    @pytest.mark.parametrize(
        "name",
        ["", "x" * (MAX_CHANNEL_LENGTH + 1), "a b", "a\tb", "a\nb", "user#", "user#,", "ns:u#,,"],
        ids=repr,
    )
    def test_invalid(self, name: str) -> None:
        assert parse_channel(name) is None


OPEN = ChannelOptions()


@pytest.mark.parametrize(
    ("channel", "options", "user", "token", "expected"),
    [
        # a valid subscription token opens anything
        ("$s", ChannelOptions(allow_subscribe=False), "", True, None),
        ("user#bob", OPEN, "alice", True, None),
        # user-limited
        ("user#alice", OPEN, "alice", False, None),
        ("dialog#bob,alice", OPEN, "alice", False, None),
        ("user#bob", OPEN, "alice", False, ErrorCode.PERMISSION_DENIED),
        ("user#alice", ChannelOptions(allow_subscribe=False), "alice", False, None),
        (
            "user#alice",
            ChannelOptions(allow_anonymous=True),
            "",
            False,
            ErrorCode.PERMISSION_DENIED,
        ),
        # private and token-only namespaces need a token, user list or not
        ("$s", OPEN, "alice", False, ErrorCode.PERMISSION_DENIED),
        ("$s#alice", OPEN, "alice", False, ErrorCode.PERMISSION_DENIED),
        (
            "news",
            ChannelOptions(require_subscription_token=True),
            "alice",
            False,
            ErrorCode.PERMISSION_DENIED,
        ),
        (
            "u#alice",
            ChannelOptions(require_subscription_token=True),
            "alice",
            False,
            ErrorCode.PERMISSION_DENIED,
        ),
        # public
        ("news", OPEN, "alice", False, None),
        ("news", OPEN, "", False, ErrorCode.PERMISSION_DENIED),
        ("news", ChannelOptions(allow_anonymous=True), "", False, None),
        (
            "news",
            ChannelOptions(allow_subscribe=False),
            "alice",
            False,
            ErrorCode.PERMISSION_DENIED,
        ),
        (
            "news",
            ChannelOptions(allow_subscribe=False, allow_anonymous=True),
            "",
            False,
            ErrorCode.PERMISSION_DENIED,
        ),
    ],
)
def test_check_subscribe(
    channel: str, options: ChannelOptions, user: str, token: bool, expected: ErrorCode | None
) -> None:
    parsed = parse_channel(channel)
    assert parsed is not None
    assert check_subscribe(parsed, options, user, token) == expected


@pytest.mark.parametrize(
    ("allow_subscribe", "require_token", "allow_anonymous", "user", "token"),
    list(itertools.product([False, True], repeat=5)),
)
def test_truth_table_for_a_plain_channel(
    allow_subscribe: bool, require_token: bool, allow_anonymous: bool, user: bool, token: bool
) -> None:
    options = ChannelOptions(
        allow_subscribe=allow_subscribe,
        require_subscription_token=require_token,
        allow_anonymous=allow_anonymous,
    )
    parsed = parse_channel("ns:news")
    assert parsed is not None
    allowed = token or (not require_token and allow_subscribe and (user or allow_anonymous))
    result = check_subscribe(parsed, options, "alice" if user else "", token)
    assert result == (None if allowed else ErrorCode.PERMISSION_DENIED)
