"""Baskets or sessions from the data: planted logs with a known answer."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from itemvec.config import IngestConfig
from itemvec.data.context_kind import adjacency_lift, decide_kind, direction_share
from itemvec.data.frames import events_from_frame, events_from_sequences
from itemvec.data.ingest import read_events
from itemvec.data.streaming import resolve_kind

N_ITEMS, N_GROUPS = 60, 6


def baskets(n: int = 2000, size: int = 6, seed: int = 0) -> list[list[int]]:
    """Items of one hidden group per basket, in random order: the order is noise."""
    rng = np.random.default_rng(seed)
    per_group = N_ITEMS // N_GROUPS
    out = []
    for _ in range(n):
        group = rng.integers(N_GROUPS)
        out.append(list(group * per_group + rng.choice(per_group, size=size, replace=False)))
    return out


def walks(n: int = 2000, length: int = 6, seed: int = 0) -> list[list[int]]:
    """Sessions of a walk on a ring: each item is one to three steps after the one before, so
    the order is the signal (the set of items alone says much less)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        item = int(rng.integers(N_ITEMS))
        walk = [item]
        for _ in range(length - 1):
            item = (item + int(rng.integers(1, 4))) % N_ITEMS
            walk.append(item)
        out.append(walk)
    return out


def frame(contexts: list[list[int]], time: str = "position") -> pl.DataFrame:
    """Long table: session_id, item_id, ts (position in the context, or the context number
    for every event when ``time='tied'``)."""
    rows = [(c, item, position if time == "position" else c)
            for c, items in enumerate(contexts) for position, item in enumerate(items)]
    return pl.DataFrame(rows, schema=["session_id", "item_id", "ts"], orient="row")


def decide(contexts: list[list[int]], time: str = "position", kind: str = "auto"):
    log = events_from_frame(frame(contexts, time), IngestConfig(time="ts", context_kind=kind))
    return log


def test_baskets_in_random_order_are_baskets():
    log = decide(baskets())
    assert not log.ordered
    decision = log.decision
    assert decision.kind == "basket" and decision.chosen_by == "data"
    assert "no measurable signal" in decision.reason
    assert abs(decision.evidence["adjacency_lift"] - 1) < 0.05


def test_sessions_whose_order_carries_signal_are_sessions():
    log = decide(walks())
    assert log.ordered and log.decision.kind == "session"
    assert "carries signal" in log.decision.reason
    assert log.decision.evidence["adjacency_lift"] > 1.2


def test_tied_timestamps_are_baskets():
    log = decide(walks(), time="tied")  # even a walk: with one time per context no order is given
    assert not log.ordered
    assert log.decision.evidence["tie_share"] == 1.0
    assert "share one timestamp" in log.decision.reason


def test_items_listed_in_a_sort_order_are_baskets():
    sorted_baskets = [sorted(b) for b in baskets()]
    log = decide(sorted_baskets)
    assert not log.ordered
    assert log.decision.evidence["direction_share"] == 1.0
    assert "sort order" in log.decision.reason


def test_an_explicit_kind_always_wins():
    assert decide(baskets(), kind="session").ordered
    assert decide(baskets(), kind="session").decision.chosen_by == "config"
    assert not decide(walks(), kind="basket").ordered


def test_a_log_without_time_is_baskets_and_too_little_data_keeps_the_order():
    log = events_from_frame(frame(walks()).drop("ts"), IngestConfig())
    assert not log.ordered and "no time column" in log.decision.reason
    tiny = decide(walks(n=3, length=3))
    assert tiny.ordered and "kept" in tiny.decision.reason


def test_sequences_handed_over_as_lists_are_judged_by_their_order():
    assert events_from_sequences(walks(), IngestConfig()).ordered
    assert not events_from_sequences(baskets(), IngestConfig()).ordered


def test_lift_is_one_under_shuffling_and_direction_share_is_a_half_for_random_pairs():
    rng = np.random.default_rng(1)
    contexts = walks()
    for walk in contexts:
        rng.shuffle(walk)
    context = np.repeat(np.arange(len(contexts)), [len(c) for c in contexts])
    items = np.concatenate(contexts)
    lift, se, compared = adjacency_lift(context, items)
    assert abs(lift - 1) < 3 * se + 0.01 and compared == len(contexts) * 4
    share, repeated, acyclic = direction_share(context, items)
    assert repeated > 100 and share < 0.7 and not acyclic


def test_a_walk_that_always_moves_forward_is_not_a_sort_order():
    """Every pair of neighbours comes in one direction, but round the ring they close a
    cycle: no ranking of the items orders every session, so it is behaviour."""
    log = decide(walks())
    assert log.decision.evidence["direction_share"] == 1.0
    assert not log.decision.evidence["neighbour_order_acyclic"]
    assert log.ordered


def test_decide_kind_samples_large_logs(monkeypatch):
    import itemvec.data.context_kind as module

    monkeypatch.setattr(module, "MAX_EVENTS", 3000)
    contexts = walks()
    context = np.repeat(np.arange(len(contexts)), [len(c) for c in contexts])
    decision = decide_kind(context, np.concatenate(contexts), None, IngestConfig(), True)
    assert decision.kind == "session"
    assert decision.evidence["events_examined"] < 4000


@pytest.mark.parametrize("maker,ordered", [(walks, True), (baskets, False)])
def test_files_decide_on_their_head_as_on_the_whole(tmp_path, maker, ordered):
    path = tmp_path / "events.csv"
    frame(maker()).write_csv(path)
    ingest = IngestConfig(time="ts")
    resolved, decision = resolve_kind(path, ingest)
    assert resolved.context_kind == ("session" if ordered else "basket")
    assert decision.kind == read_events(path, ingest).decision.kind
    assert decision.evidence["rows_read"] == 12000
