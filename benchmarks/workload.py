"""What the publishers send and what each connection should therefore receive.

The personal workload sends each event to a random user. The draw is a seeded PRNG per
publisher, so a load generator replays it from the publisher's final count and knows exactly
how many events each of its users was owed, without any per-event bookkeeping between processes.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator

__all__ = ["expected_per_user", "user_draws"]


def user_draws(seed: int, publisher: int, n_users: int) -> Iterator[int]:
    """Yield, forever, the user id of each successive event of one publisher."""
    rng = random.Random(seed * 1_000_003 + publisher)
    while True:
        yield rng.randrange(n_users)


def expected_per_user(
    seed: int, published: Iterable[int], n_users: int, users: range
) -> Counter[int]:
    """Count the events owed to each of ``users``.

    Args:
        seed: the run's seed, as given to the publishers.
        published: how many events each publisher sent, in publisher order.
        n_users: how many users the publishers drew from.
        users: the user ids whose counts are wanted.

    Returns:
        user id -> number of events sent to that user.
    """
    owed: Counter[int] = Counter()
    for publisher, count in enumerate(published):
        draws = user_draws(seed, publisher, n_users)
        for _ in range(count):
            user = next(draws)
            if user in users:
                owed[user] += 1
    return owed
