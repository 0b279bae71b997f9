"""AMQP topic patterns: ``*`` one word, ``#`` zero or more."""

from __future__ import annotations

import pytest

from tidings.topic import topic_matches


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.b", "a.b.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("*", "a", True),
        ("*", "", True),  # one empty word
        ("*", "a.b", False),
        ("*.*", "a.b", True),
        ("#", "", True),
        ("#", "a", True),
        ("#", "a.b.c", True),
        ("a.#", "a", True),
        ("a.#", "a.b", True),
        ("a.#", "a.b.c", True),
        ("a.#", "b.a", False),
        ("#.c", "c", True),
        ("#.c", "a.b.c", True),
        ("#.c", "a.b.c.d", False),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.x.y.c", True),
        ("a.#.c", "a.x.y", False),
        ("#.#", "a.b", True),
        ("a.*.#", "a", False),
        ("a.*.#", "a.b", True),
        ("*.b.*", "x.b.y", True),
        ("a..b", "a..b", True),
        ("a..b", "a.b", False),
        ("", "", True),
        ("", "a", False),
        ("a.*", "a.", True),
        ("A.b", "a.b", False),
    ],
)
def test_topic_matches(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_topic_matching_many_hashes_is_fast_enough() -> None:
    assert topic_matches("#.#.#.#.#.z", ".".join("a" * 12)) is False
