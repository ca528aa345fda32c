"""How a dispatcher shares its senders: across orgs first, then across an org's subscriptions,
with a budget for subscriptions that are failing or slow. Pure functions, no database.

- Orgs take turns: each round, the org with the fewest attempts running goes first, and in it
  the subscription with the fewest running; so a partner with work due gets the next free
  sender whatever other partners have queued.
- A healthy subscription runs at most half of the senders at once (its share).
- A failing subscription (its last attempt failed) runs one attempt at a time: a probe. Its
  next success makes it healthy again, with its full share. So does an untried one (no
  outcome seen by this dispatcher yet, e.g. after a restart) until its first answer.
- Failing and slow subscriptions together run at most `senders - reserve` attempts, so dead or
  slow endpoints never hold the senders that healthy ones need.
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
        """Senders that failing and slow subscriptions never take."""
        return max(1, self.senders // 4) if self.senders > 1 else 0

    @property
    def suspect_budget(self) -> int:
        """Most attempts failing and slow subscriptions run at once, all together."""
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
    have; `running` counts what each already has going. Caps and the suspect budget are
    multiplied by `headroom` (a claim may lease ahead of what runs now).
    """
    running = collections.Counter(running)
    suspect_running, org_running = _running_totals(running, subscribers)
    orgs: dict[str, list[str]] = {}
    for sub in waiting:
        orgs.setdefault(subscribers[sub].org_id, []).append(sub)
    # Per call, not per pick: this runs every time a sender frees up.
    cap = {sub: policy.cap(subscribers[sub]) * headroom for sub in waiting}
    suspect = {sub: subscribers[sub].suspect for sub in waiting}
    budget = policy.suspect_budget * headroom
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
                if suspect[sub] and suspect_running >= budget:
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
            total += 1
            progressed = True
            if total >= limit:
                break
        if not progressed:
            break
    return taken


def _running_totals(running, subscribers) -> tuple[int, collections.Counter]:
    """(attempts of failing, slow or untried subscriptions, attempts per org) running now."""
    suspect = 0
    by_org: collections.Counter = collections.Counter()
    for sub, n in running.items():
        subscriber = subscribers.get(sub)
        if subscriber is not None:
            suspect += n if subscriber.suspect else 0
            by_org[subscriber.org_id] += n
    return suspect, by_org
