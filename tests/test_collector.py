"""The collector's set-up: thresholds and the frozen start-up objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tidings import collector


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_settle_freezes_what_exists_and_raises_the_thresholds() -> None:
    survivor = {"kept": [1, 2, 3]}
    collector.settle()
    assert gc.get_threshold() == collector.THRESHOLDS
    assert gc.get_freeze_count() > 0
    # Frozen objects are in no generation: full collections no longer walk them.
    assert not any(obj is survivor for obj in gc.get_objects(2))

