"""Fixtures of the system tests whose nodes send events to the application."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.log.live import EventTap
from tests.system.harness import AppNames


@pytest.fixture
def app_names() -> Iterator[AppNames]:
    """Fresh names for the test's exchange, stream and events exchange, deleted afterwards."""
    names = AppNames()
    yield names
    names.delete()


@pytest.fixture
async def tap(app_names: AppNames) -> AsyncIterator[EventTap]:
    """The application's side of the test's events exchange."""
    t = EventTap(app_names.events)
    await t.start()
    yield t
    await t.stop()
