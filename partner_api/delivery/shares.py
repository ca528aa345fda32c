"""How a dispatcher shares its senders: across orgs first, then across an org's subscriptions,
with budgets for subscriptions that have not proven healthy. Pure functions, no database.

- Orgs take turns: each round, the org with the fewest attempts running goes first, and in it
  the subscription with the fewest running; so a partner with work due gets the next free
  sender whatever other partners have queued.
- A healthy subscription runs at most half of the senders at once (its share).
- A failing subscription (its last attempt failed) runs one attempt at a time: a probe. Its
  next success makes it healthy again, with its full share. So does a new one (no outcome seen
  by this dispatcher yet: brand-new, or any subscription after a restart) until its first
  answer; failing and new at once (a dead endpoint after a restart) counts as failing.
- Failing and slow subscriptions together run at most half of the senders (`suspect_budget`).
- Failing, slow and new ones together never take the reserve (`unproven_budget`): a quarter of
  the senders is kept for healthy subscriptions. From 3 senders on, the room between the two
  budgets is one that failing and slow subscriptions cannot hold, so a new subscription's first
  attempt never waits for dead endpoints' probes (only, at worst, for other new ones).
"""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass(frozen=True)
class Subscriber:
    """What the sharing rules need to know of a subscription with work waiting."""

    subscription_id: str
    org_id: str
    failing: bool = False  # its last attempt failed (consecutive_failures > 0)
    slow: bool = False  # its attempts take long, or one is running long now
    untried: bool = False  # no outcome seen yet: it may be dead

    @property
    def suspect(self) -> bool:
        """Known to fail or to be slow: within the suspect budget."""
        return self.failing or self.slow

    @property
    def unproven(self) -> bool:
        """Not known to answer promptly (suspect or untried): within the unproven budget."""
        return self.failing or self.slow or self.untried


@dataclasses.dataclass(frozen=True)
class SharePolicy:
    """The limits for a dispatcher with `senders` concurrent attempts."""

    senders: int

    @property
    def share(self) -> int:
        """Most attempts one healthy subscription runs at once."""
        return max(1, self.senders // 2)

    @property
    def reserve(self) -> int:
        """Senders that failing, slow and new subscriptions never take."""
        return max(1, self.senders // 4) if self.senders > 1 else 0

    @property
    def suspect_budget(self) -> int:
        """Most attempts failing and slow subscriptions run at once, all together."""
        return max(1, self.senders // 2)

    @property
    def unproven_budget(self) -> int:
        """Most attempts failing, slow and new subscriptions run at once, all together."""
        return max(1, self.senders - self.reserve)

    def cap(self, subscriber: Subscriber) -> int:
        return 1 if subscriber.failing or subscriber.untried else self.share


# Long: one pass that keeps every running count in locals; it runs on every free sender.
def choose(
    waiting: dict[str, int],
    subscribers: dict[str, Subscriber],
    running: collections.Counter,
    limit: int,
    policy: SharePolicy,
    headroom: int = 1,
) -> collections.Counter:
    """How many of each subscription's `waiting` deliveries to take, at most `limit` in all.

    `waiting` lists subscriptions in priority order (oldest work first) with how many they
    have; `running` counts what each already has going. Caps and budgets are multiplied by
    `headroom` (a claim may lease ahead of what runs now).
    """
    running = collections.Counter(running)
    suspect_running, unproven_running, org_running = _running_totals(running, subscribers)
    orgs: dict[str, list[str]] = {}
    for sub in waiting:
        orgs.setdefault(subscribers[sub].org_id, []).append(sub)
    # Per call, not per pick: this runs every time a sender frees up.
    cap = {sub: policy.cap(subscribers[sub]) * headroom for sub in waiting}
    suspect = {sub: subscribers[sub].suspect for sub in waiting}
    unproven = {sub: subscribers[sub].unproven for sub in waiting}
    suspect_budget = policy.suspect_budget * headroom
    unproven_budget = policy.unproven_budget * headroom
    left = dict(waiting)
    taken: collections.Counter = collections.Counter()
    total = 0
    while total < limit:
        progressed = False
        for org in sorted(orgs, key=org_running.__getitem__):  # stable: oldest work first
            best = None
            for sub in orgs[org]:
                if left[sub] <= 0 or running[sub] >= cap[sub]:
                    continue
                if suspect[sub] and suspect_running >= suspect_budget:
                    continue
                if unproven[sub] and unproven_running >= unproven_budget:
                    continue
                if best is None or running[sub] < running[best]:
                    best = sub  # the fewest running; on a tie the oldest work
            if best is None:
                continue
            left[best] -= 1
            taken[best] += 1
            running[best] += 1
            org_running[org] += 1
            suspect_running += suspect[best]
            unproven_running += unproven[best]
            total += 1
            progressed = True
            if total >= limit:
                break
        if not progressed:
            break
    return taken


def _running_totals(running, subscribers) -> tuple[int, int, collections.Counter]:
    """Attempts running now: of suspect subscriptions, of unproven ones, and per org."""
    suspect = unproven = 0
    by_org: collections.Counter = collections.Counter()
    for sub, n in running.items():
        subscriber = subscribers.get(sub)
        if subscriber is not None:
            suspect += n if subscriber.suspect else 0
            unproven += n if subscriber.unproven else 0
            by_org[subscriber.org_id] += n
    return suspect, unproven, by_org
