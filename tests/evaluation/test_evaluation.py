"""Evaluation protocol: time split, query construction, known-answer metrics."""

from __future__ import annotations

import numpy as np
import pytest

from itemvec.data.ingest import EventLog
from itemvec.evaluation.protocol import (
    Queries,
    build_queries,
    evaluate,
    metrics_from_ranks,
    split_contexts,
    target_ranks,
)


def make_log(contexts: list[list[int]], n_items: int, ordered: bool = True,
             ends: list[float] | None = None) -> EventLog:
    lengths = [len(c) for c in contexts]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    times = None
    if ends is not None:
        times = np.concatenate([np.full(len(c), e, dtype=np.float64)
                                for c, e in zip(contexts, ends, strict=True)])
    return EventLog(item_ids=np.array([f"i{k}" for k in range(n_items)], dtype=object),
                    context_ids=np.array([f"c{k}" for k in range(len(contexts))], dtype=object),
                    indptr=indptr, items=np.array([i for c in contexts for i in c], np.int32),
                    weights=np.ones(sum(lengths), np.float32), times=times, ordered=ordered)


def identity(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


class FixedScorer:
    """The same score row for every history."""

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float64)

    def score_histories(self, histories):
        return np.tile(self.scores, (len(histories), 1))


class NextItemOracle:
    """Knows that item i is always followed by item i + 1."""

    def __init__(self, n_items: int):
        self.n_items = n_items

    def score_histories(self, histories):
        scores = np.zeros((len(histories), self.n_items))
        for row, history in enumerate(histories):
            scores[row, (history[-1] + 1) % self.n_items] = 1.0
        return scores


def test_split_by_time_puts_the_newest_contexts_in_test():
    ends = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0]
    log = make_log([[0, 1]] * 10, n_items=2, ends=ends)
    split = split_contexts(log, valid=0.2, test=0.2)
    assert split.by_time
    assert sorted(split.test.tolist()) == [2, 6]  # ends 9 and 8
    assert sorted(split.valid.tolist()) == [4, 8]  # ends 7 and 6
    assert sorted(split.train.tolist()) == [0, 1, 3, 5, 7, 9]


def test_split_without_clock_is_seeded_and_partitions():
    log = make_log([[0, 1]] * 50, n_items=2)
    split = split_contexts(log, valid=0.1, test=0.2, seed=3)
    assert not split.by_time
    assert (len(split.train), len(split.valid), len(split.test)) == (35, 5, 10)
    everything = np.concatenate([split.train, split.valid, split.test])
    assert sorted(everything.tolist()) == list(range(50))
    again = split_contexts(log, valid=0.1, test=0.2, seed=3)
    np.testing.assert_array_equal(split.test, again.test)


def test_metrics_from_hand_made_ranks():
    metrics = metrics_from_ranks(np.array([0, 1, 4, 25]), k=20)
    assert metrics["HR@20"] == pytest.approx(3 / 4)
    assert metrics["NDCG@20"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(6)) / 4)
    assert metrics["MRR@20"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 4)
    assert metrics["queries"] == 4
    assert metrics_from_ranks(np.array([0, 1, 4, 25]), k=1)["HR@1"] == pytest.approx(1 / 4)
    assert metrics_from_ranks(np.array([], dtype=np.int64))["HR@20"] == 0.0


def test_target_ranks_exclude_history_and_count_ties_against():
    scorer = FixedScorer([5.0, 4.0, 3.0, 3.0, 1.0])
    queries = Queries([np.array([0]), np.array([1]), np.array([0, 1])],
                      np.array([2, 2, 4]))
    # q0: item 0 is history; 1 beats 2, 3 ties with 2 -> rank 2
    # q1: 0 beats 2, 3 ties -> rank 2; q2: 0 and 1 are history, 2 and 3 beat 4 -> rank 2
    np.testing.assert_array_equal(target_ranks(scorer, queries), [2, 2, 2])
    np.testing.assert_array_equal(target_ranks(scorer, queries, batch_size=1), [2, 2, 2])


def test_session_queries_and_targets_already_in_history_are_skipped():
    log = make_log([[0, 1, 2], [3, 4, 3], [5]], n_items=6)
    s2i = build_queries(log, identity(6), "s2i")
    assert [h.tolist() for h in s2i.histories] == [[0], [0, 1], [3]]
    assert s2i.targets.tolist() == [1, 2, 4]  # [3, 4] -> 3 skipped: 3 is in the history
    i2i = build_queries(log, identity(6), "i2i")
    # i2i asks from the last item only: 4 -> 3 is a fair query (3 is not in that query)
    assert [h.tolist() for h in i2i.histories] == [[0], [1], [3], [4]]
    assert i2i.targets.tolist() == [1, 2, 4, 3]


def test_unknown_items_are_dropped_from_histories_and_counted_as_targets():
    log = make_log([[0, 1, 2, 3]], n_items=4)
    to_model = np.array([0, -1, 1, 2])  # item 1 is not in the model
    queries = build_queries(log, to_model, "s2i")
    assert [h.tolist() for h in queries.histories] == [[0], [0, 1]]
    assert queries.targets.tolist() == [1, 2]
    assert queries.skipped_unknown == 1


def test_basket_leave_one_out():
    log = make_log([[0, 1, 2, 3], [4], [5, 6]], n_items=7, ordered=False)
    s2i = build_queries(log, identity(7), "s2i", seed=0)
    assert len(s2i) == 2  # the single-item basket gives no query
    for history, target, basket in zip(s2i.histories, s2i.targets, ([0, 1, 2, 3], [5, 6]),
                                       strict=True):
        assert sorted([*history.tolist(), int(target)]) == basket
    i2i = build_queries(log, identity(7), "i2i", seed=0)
    for history, target, basket in zip(i2i.histories, i2i.targets, ([0, 1, 2, 3], [5, 6]),
                                       strict=True):
        assert len(history) == 1 and history[0] in basket and history[0] != target
        assert target in basket


def test_a_perfect_oracle_scores_hit_rate_one():
    chains = [list(range(start, start + 5)) for start in range(0, 20, 2)]
    log = make_log(chains, n_items=30)
    for task in ("s2i", "i2i"):
        queries = build_queries(log, identity(30), task)
        metrics = evaluate(NextItemOracle(30), queries, k=1)
        assert metrics["HR@1"] == 1.0 and metrics["MRR@1"] == 1.0 and metrics["queries"] == 40


def test_max_queries_caps_with_a_seeded_sample():
    log = make_log([list(range(10))] * 5, n_items=10)
    capped = build_queries(log, identity(10), "s2i", max_queries=7, seed=1)
    assert len(capped) == 7 and len(capped.histories) == 7
    again = build_queries(log, identity(10), "s2i", max_queries=7, seed=1)
    np.testing.assert_array_equal(capped.targets, again.targets)


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'u2i'"):
        build_queries(make_log([[0, 1]], 2), identity(2), "u2i")


def reference_queries(log: EventLog, to_model: np.ndarray, task: str, seed: int = 0):
    """The protocol written the obvious (quadratic) way."""
    rng = np.random.default_rng(seed)
    out, unknown = [], 0
    for c in range(log.n_contexts):
        items = to_model[log.context(c)]
        if log.ordered:
            pairs = [(items[:t], int(items[t])) for t in range(1, len(items))]
        elif len(items) >= 2:
            held = int(rng.integers(len(items)))
            pairs = [(np.delete(items, held), int(items[held]))]
        else:
            pairs = []
        for history, target in pairs:
            if target < 0:
                unknown += 1
                continue
            history = history[history >= 0]
            if task == "i2i":
                if log.ordered:
                    history = history[-1:]
                elif len(history):
                    history = history[int(rng.integers(len(history)))][None]
            if len(history) == 0 or target in history:
                continue
            out.append((history.tolist(), target))
    return out, unknown


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("task", ["s2i", "i2i"])
def test_queries_match_the_reference_protocol(ordered, task):
    rng = np.random.default_rng(7)
    contexts = [rng.integers(0, 12, size=rng.integers(1, 15)).tolist() for _ in range(80)]
    log = make_log(contexts, n_items=12, ordered=ordered)
    to_model = np.where(rng.random(12) < 0.2, -1, np.arange(12))
    queries = build_queries(log, to_model, task, seed=3)
    want, unknown = reference_queries(log, to_model, task, seed=3)
    got = [(h.tolist(), int(t)) for h, t in zip(queries.histories, queries.targets, strict=True)]
    assert got == want and queries.skipped_unknown == unknown and len(got) > 20


@pytest.mark.parametrize("task", ["s2i", "i2i"])
def test_capped_session_queries_are_the_reference_sample(task):
    """The vectorised session path keeps exactly the queries the seeded cap picks from the
    full list (empty and one-event contexts included)."""
    rng = np.random.default_rng(11)
    contexts = [rng.integers(0, 9, size=rng.integers(0, 12)).tolist() for _ in range(120)]
    log = make_log(contexts, n_items=9, ordered=True)
    to_model = np.where(np.arange(9) == 4, -1, np.arange(9))
    want, unknown = reference_queries(log, to_model, task, seed=5)
    keep = np.sort(np.random.default_rng(5).choice(len(want), size=25, replace=False))
    queries = build_queries(log, to_model, task, seed=5, max_queries=25)
    got = [(h.tolist(), int(t)) for h, t in zip(queries.histories, queries.targets, strict=True)]
    assert len(want) > 100 and got == [want[i] for i in keep]
    assert queries.skipped_unknown == unknown > 0


def test_one_long_history_costs_linear_memory():
    """A 30k-event user history: quadratic prefix copies would need ~3.6 GB."""
    import tracemalloc

    n = 30_000
    log = make_log([np.random.default_rng(0).integers(0, 5_000, size=n).tolist()], 5_000)
    tracemalloc.start()
    try:
        queries = build_queries(log, identity(5_000), "s2i", max_queries=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(queries) == 100
    assert peak < 100 * 2**20, peak


def test_ranks_of_a_huge_catalogue_are_scored_in_small_batches(monkeypatch):
    """At 1M items 1,024 queries of float64 scores would be 8 GB: batches shrink with width."""
    import itemvec.evaluation.protocol as evaluation

    class Scorer:
        widths: list[int] = []

        def __len__(self) -> int:
            return 1000

        def score_histories(self, histories):
            self.widths.append(len(histories))
            return np.tile(-np.arange(1000, dtype=np.float32), (len(histories), 1))

    monkeypatch.setattr(evaluation, "SCORE_CELLS", 10_000)
    queries = Queries([np.array([0])] * 25, np.arange(1, 26))
    ranks = evaluation.target_ranks(Scorer(), queries)
    assert Scorer.widths == [10, 10, 5]
    np.testing.assert_array_equal(ranks, np.arange(0, 25))  # item 0 (history) is excluded
