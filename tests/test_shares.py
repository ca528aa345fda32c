"""The sharing rules of delivery/shares.py as a specification: no database, no threads."""

import collections

import pytest

from partner_api.delivery.shares import SharePolicy, Subscriber, choose

TEN = SharePolicy(senders=10)


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
    assert TEN.suspect_budget == 8
    assert TEN.cap(Subscriber("a", "o")) == 5
    assert TEN.cap(Subscriber("a", "o", failing=True)) == 1  # one probe at a time
    assert TEN.cap(Subscriber("a", "o", slow=True)) == 5  # slow but answering: full share


def test_an_untried_subscription_is_probed_first_within_the_budget():
    dead = [(f"new{i}", "X", "untried") for i in range(20)]
    subs = subscribers(*dead, ("ok", "H"))
    waiting = {f"new{i}": 10 for i in range(20)}
    taken = choose(waiting, subs, collections.Counter(), 10, TEN)
    assert sum(taken.values()) == 8 and all(n == 1 for n in taken.values())
    assert choose({**waiting, "ok": 5}, subs, collections.Counter(taken), 2, TEN) == {"ok": 2}


def test_one_sender_still_sends_everything_one_at_a_time():
    one = SharePolicy(senders=1)
    assert (one.share, one.reserve, one.suspect_budget) == (1, 0, 1)
    subs = subscribers(("dead", "o", "failing"))
    assert choose({"dead": 3}, subs, collections.Counter(), 1, one) == {"dead": 1}


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


def test_failing_and_slow_subscriptions_never_take_the_reserve():
    dead = [(f"dead{i}", f"org{i % 5}", "failing") for i in range(50)]
    subs = subscribers(*dead, ("ok", "H"))
    waiting = {f"dead{i}": 10 for i in range(50)}
    taken = choose(waiting, subs, collections.Counter(), 10, TEN)
    assert sum(taken.values()) == TEN.suspect_budget == 8  # two senders stay free
    assert all(n == 1 for n in taken.values())
    # With the budget in use, a healthy subscription still gets the free senders.
    running = collections.Counter(taken)
    assert choose({**waiting, "ok": 3}, subs, running, 2, TEN) == {"ok": 2}


def test_slow_subscriptions_share_the_budget_but_keep_their_share():
    subs = subscribers(("slow1", "C", "slow"), ("slow2", "C", "slow"), ("d", "D"))
    taken = choose({"slow1": 15, "slow2": 15}, subs, collections.Counter(), 10, TEN)
    assert taken == {"slow1": 4, "slow2": 4}
    running = collections.Counter(taken)
    assert choose({"slow1": 11, "slow2": 11, "d": 1}, subs, running, 2, TEN) == {"d": 1}


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
