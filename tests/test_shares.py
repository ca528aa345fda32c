"""The sharing rules of delivery/shares.py as a specification: no database, no threads."""

import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partner_api.delivery.shares import SharePolicy, Subscriber, choose

TEN = SharePolicy(senders=10)
FLAGS = ["failing", "slow", "untried"]


def subscribers(*specs):
    """Subscriber objects from (id, org, flags) specs; flags: 'failing', 'slow', 'untried'."""
    return {
        sub: Subscriber(
            sub,
            org,
            failing="failing" in flags,
            slow="slow" in flags,
            untried="untried" in flags,
        )
        for sub, org, *flags in specs
    }


def test_policy_limits_for_ten_senders():
    assert TEN.share == 5
    assert TEN.reserve == 2
    assert TEN.suspect_budget == 5  # failing and slow: half of the senders
    assert TEN.unproven_budget == 8  # failing, slow and new: all but the reserve
    assert TEN.cap(Subscriber("a", "o")) == 5
    assert TEN.cap(Subscriber("a", "o", failing=True)) == 1  # one probe at a time
    assert TEN.cap(Subscriber("a", "o", untried=True)) == 1  # until its first answer
    assert TEN.cap(Subscriber("a", "o", slow=True)) == 5  # slow but answering: full share


@pytest.mark.parametrize(
    ("senders", "limits"),
    [
        # (share, reserve, suspect budget, unproven budget)
        (1, (1, 0, 1, 1)),
        (2, (1, 1, 1, 1)),
        (3, (1, 1, 1, 2)),
        (4, (2, 1, 2, 3)),
        (10, (5, 2, 5, 8)),
        (20, (10, 5, 10, 15)),
    ],
)
def test_policy_limits_for_small_and_large_sender_counts(senders, limits):
    policy = SharePolicy(senders)
    assert (policy.share, policy.reserve, policy.suspect_budget, policy.unproven_budget) == limits


def test_new_subscriptions_run_one_at_a_time_and_never_take_the_reserve():
    new = [(f"new{i}", "X", "untried") for i in range(20)]
    subs = subscribers(*new, ("ok", "H"))
    waiting = {f"new{i}": 10 for i in range(20)}
    taken = choose(waiting, subs, collections.Counter(), 10, TEN)
    assert sum(taken.values()) == TEN.unproven_budget == 8
    assert all(n == 1 for n in taken.values())
    assert choose({**waiting, "ok": 5}, subs, collections.Counter(taken), 2, TEN) == {"ok": 2}


def test_an_untried_subscription_is_sent_while_failing_probes_hold_what_they_may():
    dead = [(f"dead{i}", f"org{i % 4}", "failing") for i in range(20)]
    subs = subscribers(*dead, ("new", "N", "untried"), ("ok", "H"))
    waiting = {f"dead{i}": 10 for i in range(20)}
    probes = choose(waiting, subs, collections.Counter(), 10, TEN)
    assert sum(probes.values()) == TEN.suspect_budget == 5
    # The probes hold their most; the new subscription's first attempt starts at once ...
    running = collections.Counter(probes)
    assert choose({**waiting, "new": 1}, subs, running, 5, TEN) == {"new": 1}
    # ... and the reserve is still there for a healthy one beside it.
    running["new"] += 1
    assert choose({**waiting, "ok": 9}, subs, running, 4, TEN) == {"ok": 4}


def test_new_subscriptions_beside_failing_probes_leave_the_reserve_alone():
    dead = [(f"dead{i}", f"org{i % 4}", "failing") for i in range(20)]
    new = [(f"new{i}", f"N{i}", "untried") for i in range(6)]
    subs = subscribers(*dead, *new, ("ok", "H"))
    waiting = {sub: 10 for sub in subs if sub != "ok"}
    taken = choose(waiting, subs, collections.Counter({"dead0": 1}), 9, TEN)
    # Orgs take turns: three more probes (four of the five they may hold), then the new ones
    # until failing, slow and new together hold 8.
    assert sum(n for sub, n in taken.items() if sub.startswith("dead")) == 3
    assert sum(n for sub, n in taken.items() if sub.startswith("new")) == 4
    running = collections.Counter(taken) + collections.Counter({"dead0": 1})
    assert choose(waiting, subs, running, 2, TEN) == {}  # the last two senders stay free
    assert choose({**waiting, "ok": 9}, subs, running, 2, TEN) == {"ok": 2}


def test_after_a_restart_a_failing_subscription_counts_as_failing_not_new():
    """A dispatcher that just started has seen no outcome: every subscription is untried to it,
    and those whose last attempt failed (in the database) are failing as well."""
    dead = [(f"dead{i}", f"org{i % 4}", "failing", "untried") for i in range(20)]
    subs = subscribers(*dead, ("new", "N", "untried"))
    waiting = {f"dead{i}": 10 for i in range(20)}
    taken = choose({**waiting, "new": 1}, subs, collections.Counter(), 10, TEN)
    assert taken["new"] == 1
    assert sum(taken.values()) - 1 == TEN.suspect_budget  # not the unproven budget


def test_one_sender_still_sends_everything_one_at_a_time():
    one = SharePolicy(senders=1)
    subs = subscribers(("dead", "o", "failing"), ("new", "n", "untried"), ("ok", "h"))
    assert choose({"dead": 3}, subs, collections.Counter(), 1, one) == {"dead": 1}
    assert choose({"new": 3}, subs, collections.Counter(), 1, one) == {"new": 1}
    assert choose({"ok": 3}, subs, collections.Counter(), 1, one) == {"ok": 1}


def test_two_senders_keep_one_for_healthy_and_share_the_other():
    """Two senders have no room for both a probe and a new subscription beside the reserve:
    they take turns on the one sender that is not reserved, orgs first as always."""
    two = SharePolicy(senders=2)
    subs = subscribers(("dead", "D", "failing"), ("new", "N", "untried"), ("ok", "H"))
    busy = collections.Counter({"dead": 1})
    assert choose({"dead": 3, "new": 1, "ok": 3}, subs, busy, 1, two) == {"ok": 1}
    assert choose({"new": 1, "dead": 3}, subs, collections.Counter(), 2, two) == {"new": 1}


def test_three_senders_run_a_probe_a_new_subscription_and_a_healthy_one_at_once():
    three = SharePolicy(senders=3)
    subs = subscribers(("dead", "D", "failing"), ("new", "N", "untried"), ("ok", "H"))
    waiting = {"dead": 3, "new": 1, "ok": 3}
    assert choose(waiting, subs, collections.Counter(), 3, three) == {
        "dead": 1,
        "new": 1,
        "ok": 1,
    }


def test_orgs_take_turns_whatever_one_of_them_has_queued():
    subs = subscribers(("big", "A"), ("small", "B"))
    taken = choose({"big": 1000, "small": 1}, subs, collections.Counter(), 4, TEN)
    assert taken == {"big": 3, "small": 1}


def test_the_org_with_fewest_running_goes_first():
    subs = subscribers(("a", "A"), ("b", "B"))
    running = collections.Counter({"a": 4})
    assert choose({"a": 10, "b": 10}, subs, running, 1, TEN) == {"b": 1}


def test_within_an_org_its_subscriptions_take_turns():
    subs = subscribers(("a1", "A"), ("a2", "A"), ("a3", "A"))
    taken = choose({"a1": 100, "a2": 100, "a3": 100}, subs, collections.Counter(), 6, TEN)
    assert taken == {"a1": 2, "a2": 2, "a3": 2}


def test_a_healthy_subscription_runs_at_most_its_share():
    subs = subscribers(("a", "A"))
    assert choose({"a": 100}, subs, collections.Counter(), 10, TEN) == {"a": 5}
    assert choose({"a": 100}, subs, collections.Counter({"a": 5}), 10, TEN) == {}


def test_a_failing_subscription_runs_one_probe_at_a_time():
    subs = subscribers(("dead", "A", "failing"), ("ok", "B"))
    assert choose({"dead": 10, "ok": 10}, subs, collections.Counter(), 10, TEN) == {
        "dead": 1,
        "ok": 5,
    }
    busy = collections.Counter({"dead": 1})
    assert choose({"dead": 10}, subs, busy, 10, TEN) == {}


def test_failing_and_slow_subscriptions_never_hold_more_than_half_the_senders():
    dead = [(f"dead{i}", f"org{i % 5}", "failing") for i in range(50)]
    subs = subscribers(*dead, ("ok", "H"))
    waiting = {f"dead{i}": 10 for i in range(50)}
    taken = choose(waiting, subs, collections.Counter(), 10, TEN)
    assert sum(taken.values()) == TEN.suspect_budget == 5  # five senders stay free
    assert all(n == 1 for n in taken.values())
    # With the budget in use, a healthy subscription still gets the free senders (its share).
    running = collections.Counter(taken)
    assert choose({**waiting, "ok": 9}, subs, running, 5, TEN) == {"ok": 5}


def test_slow_subscriptions_share_the_budget_but_keep_their_share():
    subs = subscribers(("slow1", "C", "slow"), ("slow2", "C", "slow"), ("d", "D"))
    assert choose({"slow1": 15}, subs, collections.Counter(), 10, TEN) == {"slow1": 5}
    taken = choose({"slow1": 15, "slow2": 15}, subs, collections.Counter(), 10, TEN)
    assert taken == {"slow1": 3, "slow2": 2}
    running = collections.Counter(taken)
    assert choose({"slow1": 12, "slow2": 13, "d": 1}, subs, running, 2, TEN) == {"d": 1}


def test_a_subscription_that_recovers_gets_its_full_share_at_once():
    failing = subscribers(("s", "A", "failing"))
    assert choose({"s": 10}, failing, collections.Counter(), 10, TEN) == {"s": 1}
    recovered = subscribers(("s", "A"))
    assert choose({"s": 10}, recovered, collections.Counter(), 10, TEN) == {"s": 5}


def test_nothing_waiting_is_never_taken_and_limit_is_respected():
    subs = subscribers(("a", "A"), ("b", "B"))
    assert choose({"a": 1, "b": 0}, subs, collections.Counter(), 10, TEN) == {"a": 1}
    assert sum(choose({"a": 9, "b": 9}, subs, collections.Counter(), 3, TEN).values()) == 3


@pytest.mark.parametrize("headroom", [1, 2])
def test_headroom_scales_caps_and_budget_for_leasing_ahead(headroom):
    subs = subscribers(("a", "A"), ("dead", "B", "failing"))
    taken = choose({"a": 100, "dead": 100}, subs, collections.Counter(), 100, TEN, headroom)
    assert taken == {"a": 5 * headroom, "dead": 1 * headroom}


def test_running_work_of_subscriptions_without_waiting_work_counts_for_their_org():
    subs = subscribers(("a1", "A"), ("a2", "A"), ("b", "B"))
    running = collections.Counter({"a1": 3})
    assert choose({"a2": 5, "b": 5}, subs, running, 1, TEN) == {"b": 1}


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(
    senders=st.integers(1, 12),
    specs=st.lists(
        st.tuples(
            st.sampled_from("ABC"),  # org
            st.sets(st.sampled_from(FLAGS)),
            st.integers(0, 4),  # running
            st.integers(0, 6),  # waiting
        ),
        min_size=1,
        max_size=8,
    ),
    limit=st.integers(0, 12),
    headroom=st.sampled_from([1, 3]),
)
def test_choose_keeps_every_limit_and_takes_all_that_they_allow(senders, specs, limit, headroom):
    policy = SharePolicy(senders)
    subs = subscribers(*((f"s{i}", org, *flags) for i, (org, flags, _, _) in enumerate(specs)))
    running = collections.Counter({f"s{i}": spec[2] for i, spec in enumerate(specs)})
    waiting = {f"s{i}": spec[3] for i, spec in enumerate(specs)}
    taken = choose(waiting, subs, running, limit, policy, headroom)
    after = running + taken

    def held(kind: str) -> int:
        return sum(n for sub, n in after.items() if getattr(subs[sub], kind))

    def full(sub: str) -> bool:
        """Whether its cap or a budget it counts against is reached."""
        subscriber = subs[sub]
        return (
            after[sub] >= policy.cap(subscriber) * headroom
            or (subscriber.suspect and held("suspect") >= policy.suspect_budget * headroom)
            or (subscriber.unproven and held("unproven") >= policy.unproven_budget * headroom)
        )

    assert sum(taken.values()) <= limit
    for sub, n in taken.items():
        assert n <= waiting[sub]
        assert after[sub] <= policy.cap(subs[sub]) * headroom
    if any(subs[sub].suspect for sub in taken):
        assert held("suspect") <= policy.suspect_budget * headroom
    if any(subs[sub].unproven for sub in taken):
        assert held("unproven") <= policy.unproven_budget * headroom
    if sum(taken.values()) < limit:  # below the limit, only the rules held anything back
        assert all(full(sub) for sub in waiting if waiting[sub] > taken[sub])
