"""Channel names and the subscribe permission truth table."""

from __future__ import annotations

import itertools
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tidings.channels import (
    MAX_CHANNEL_LENGTH,
    MAX_USER_LENGTH,
    ChannelName,
    InvalidName,
    NameKind,
    channel_problem,
    check_presence,
    check_publish,
    check_subscribe,
    name_problem,
    parse_channel,
    read_channel,
)
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


class TestNames:
    @pytest.mark.parametrize(
        ("value", "kind", "problem"),
        [
            ("a\x00b", NameKind.CHANNEL, "holds a control character (U+0000 at index 1)"),
            ("\x1b[0m", NameKind.USER, "holds a control character (U+001B at index 0)"),
            ("a\x7f", NameKind.CHANNEL, "holds a control character (U+007F at index 1)"),
            ("a\x9f", NameKind.USER, "holds a control character (U+009F at index 1)"),
            ("\ud800", NameKind.USER, "is not valid UTF-8: a lone surrogate (U+D800 at index 0)"),
            (
                "a\udcff",
                NameKind.CHANNEL,
                "is not valid UTF-8: a lone surrogate (U+DCFF at index 1)",
            ),
            ("a b", NameKind.CHANNEL, "holds whitespace (U+0020 at index 1)"),
            ("a\u2028", NameKind.NAMESPACE, "holds whitespace (U+2028 at index 1)"),
            ("", NameKind.CHANNEL, "is empty"),
            ("", NameKind.NAMESPACE, "is empty"),
            ("x" * 256, NameKind.CHANNEL, "is 256 bytes long, over the limit of 255"),
            ("€" * 86, NameKind.USER, "is 258 bytes long, over the limit of 255"),
            (5, NameKind.CHANNEL, "must be a string"),
            (None, NameKind.USER, "must be a string"),
            (b"news", NameKind.CHANNEL, "must be a string"),
        ],
        ids=repr,
    )
    def test_problems_are_named(self, value: object, kind: NameKind, problem: str) -> None:
        assert name_problem(value, kind) == f"{kind.label} {problem}"

    @pytest.mark.parametrize(
        ("value", "kind"),
        [
            ("", NameKind.USER),  # anonymous
            ("Zoë 山田", NameKind.USER),  # user ids may hold spaces
            ("x" * MAX_CHANNEL_LENGTH, NameKind.CHANNEL),
            ("€" * 85, NameKind.CHANNEL),  # 255 bytes
            ("u" * MAX_USER_LENGTH, NameKind.USER),
            ("👩\u200d💻:room", NameKind.CHANNEL),  # a joiner is a format character, not a control
            ("a{b}", NameKind.CHANNEL),
        ],
    )
    def test_valid(self, value: str, kind: NameKind) -> None:
        assert name_problem(value, kind) is None

    def test_a_channel_that_names_no_user(self) -> None:
        for name in ("user#", "ns:u#,,", "#"):
            with pytest.raises(InvalidName, match="names no user"):
                read_channel(name)
        # The '#' of a namespace is not a user list.
        assert read_channel("a#:b").users == frozenset()


def _refused_character(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cs")


@given(st.text(st.characters(codec=None), max_size=300))
@example("\x00")
@example("\ud800")
@example("é" * 128)
def test_name_problem_agrees_with_the_rules(value: str) -> None:
    # Every kind refuses exactly: controls (Cc: C0, DEL, C1), surrogates (Cs), over-long
    # UTF-8; channel names and namespaces also blanks and the empty name.
    for kind in NameKind:
        refused = (
            any(_refused_character(c) for c in value)
            or (kind.strict and (not value or any(c.isspace() for c in value)))
            or (
                not any(_refused_character(c) for c in value)
                and len(value.encode("utf-8")) > kind.max_bytes
            )
        )
        assert (name_problem(value, kind) is not None) is refused, (kind, value)


@given(st.text(max_size=300))
def test_a_valid_name_encodes_and_the_wire_takes_it(value: str) -> None:
    # What passes can always be written: as UTF-8, and as JSON by the wire encoder.
    import orjson

    if name_problem(value, NameKind.CHANNEL) is None:
        assert len(value.encode("utf-8")) <= MAX_CHANNEL_LENGTH
        assert orjson.loads(orjson.dumps(value)) == value
    if name_problem(value, NameKind.USER) is None:
        assert orjson.loads(orjson.dumps(value)) == value


@given(st.text(st.characters(codec=None), max_size=300))
def test_channel_problem_is_read_channel(value: str) -> None:
    problem = channel_problem(value)
    assert (parse_channel(value) is None) is (problem is not None)
    if problem is None:
        assert read_channel(value).name == value
    else:
        with pytest.raises(InvalidName) as info:
            read_channel(value)
        assert str(info.value) == problem


@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300))
def test_the_printable_ascii_shortcut_decides_as_the_rules(value: str) -> None:
    # channel_problem skips name_problem for visible ASCII within the limit: same answer.
    expected = name_problem(value, NameKind.CHANNEL)
    if expected is None:
        _, sep, rest = value.partition(":")
        rest = rest if sep else value
        if "#" in rest and not rest.rpartition("#")[2].strip(","):
            expected = "no user"
    assert (channel_problem(value) is None) is (expected is None)


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


@pytest.mark.parametrize(
    ("for_client", "for_subscriber", "for_anonymous", "user", "subscribed", "could", "allowed"),
    [
        (False, False, False, "alice", True, True, False),
        (True, False, False, "alice", False, True, True),
        # for_client covers only channels the client could subscribe to by itself
        (True, False, False, "alice", False, False, False),
        (True, False, False, "", False, True, False),
        (True, False, True, "", False, True, True),
        (False, True, False, "alice", False, True, False),
        (False, True, False, "alice", True, False, True),
        (False, True, False, "", True, True, False),
        (False, True, True, "", True, True, True),
        (False, True, True, "", False, True, False),
    ],
)
def test_publish_and_presence_permissions(
    for_client: bool,
    for_subscriber: bool,
    for_anonymous: bool,
    user: str,
    subscribed: bool,
    could: bool,
    allowed: bool,
) -> None:
    publish = ChannelOptions(
        allow_publish_for_client=for_client,
        allow_publish_for_subscriber=for_subscriber,
        allow_publish_for_anonymous=for_anonymous,
    )
    presence = ChannelOptions(
        presence=True,
        allow_presence_for_client=for_client,
        allow_presence_for_subscriber=for_subscriber,
        allow_presence_for_anonymous=for_anonymous,
    )
    expected = None if allowed else ErrorCode.PERMISSION_DENIED
    assert check_publish(publish, user, subscribed, could) == expected
    assert check_presence(presence, user, subscribed, could) == expected
