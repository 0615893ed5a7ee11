"""Explanations add up to the recommendation score; evidence and the --min-support guard."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from itemvec.config import CooccurrenceConfig, IngestConfig
from itemvec.counting.cooccurrence import apply_min_support, count_pairs, count_support
from itemvec.data.ingest import ROW, build_log
from itemvec.query.explain import Explainer, explainer_for_bundle


def tiny_log(kind: str):
    contexts = ["s1"] * 5 + ["s2"] * 2 + ["s3"] * 2
    items = ["a", "b", "c", "a", "b", "a", "b", "c", "d"]
    table = pl.DataFrame({"context": contexts, "item": items, ROW: list(range(len(items))),
                          "weight": [1.0] * len(items)})
    return build_log(table, IngestConfig(context_kind=kind))


@pytest.mark.parametrize("kind", ["session", "basket"])
def test_support_counts_distinct_contexts_not_repeats(kind):
    log = tiny_log(kind)
    support = count_support(log, CooccurrenceConfig())
    idx = {item: i for i, item in enumerate(log.item_ids)}
    assert support[idx["a"], idx["b"]] == 2  # s1 (twice in a session) and s2
    assert support[idx["a"], idx["c"]] == 1 and support[idx["c"], idx["d"]] == 1
    assert (support != support.T).nnz == 0
    kept = apply_min_support(count_pairs(log, CooccurrenceConfig()), log,
                             CooccurrenceConfig(min_support=2))
    assert kept[idx["a"], idx["b"]] > 0 and kept.nnz == 2  # only a-b survives


def test_min_support_on_the_shop_drops_rare_pairs_only(shop_log):
    config = CooccurrenceConfig(min_support=3)
    full = count_pairs(shop_log, config)
    kept = apply_min_support(full, shop_log, config)
    support = count_support(shop_log, config)
    assert 0 < kept.nnz < full.nnz
    assert np.all(np.asarray(support[kept.nonzero()]).ravel() >= 3)
    rows, cols = kept.nonzero()
    assert np.allclose(np.asarray(kept[rows, cols]).ravel(), np.asarray(full[rows, cols]).ravel())
    assert apply_min_support(full, shop_log, CooccurrenceConfig()) is full


def test_explanation_adds_up_to_the_recommendation_score(trained):
    emb = trained.embeddings
    explainer = Explainer(emb, trained.cooccurrence)
    history = [str(i) for i in emb.item_ids[[3, 10, 25]]]
    ids, scores = emb.recommend(history, n=3)
    for item, score in zip(ids, scores, strict=True):
        result = explainer.explain(history, str(item))
        assert result["score"] == pytest.approx(float(score), abs=1e-3)
        parts = result["history"]
        assert {p["item_id"] for p in parts} == set(history)
        # recency weights sum to 1, times (effective history length) ** evidence_power
        half_life = emb.query.recency_half_life  # 0 when tuning chose equal weights
        recency = 0.5 ** (np.arange(2, -1, -1) / half_life) if half_life > 0 else np.ones(3)
        recency /= recency.sum()
        expected = (1.0 / np.square(recency).sum()) ** emb.query.evidence_power
        assert sum(p["weight"] for p in parts) == pytest.approx(expected, abs=1e-4)
        assert [p["contribution"] for p in parts] == sorted((p["contribution"] for p in parts),
                                                            reverse=True)
        total = sum(p["contribution"] for p in parts) + result["popularity"]
        assert total == pytest.approx(result["score"], abs=1e-3)


def test_evidence_is_the_stored_count_and_its_pmi(trained):
    emb, matrix = trained.embeddings, trained.cooccurrence
    rows, cols = matrix.nonzero()
    a, b = int(rows[0]), int(cols[0])
    result = Explainer(emb, matrix).explain([str(emb.item_ids[a])], str(emb.item_ids[b]))
    part = result["history"][0]
    mass = np.asarray(matrix.sum(axis=1)).ravel()
    assert part["count"] == pytest.approx(float(matrix[a, b]), abs=1e-3)
    assert part["pmi"] == pytest.approx(math.log(matrix[a, b] * mass.sum() / (mass[a] * mass[b])),
                                        abs=1e-3)


def test_unknown_history_items_are_skipped_and_counted(trained):
    emb = trained.embeddings
    result = Explainer(emb).explain(["nope", str(emb.item_ids[0])], str(emb.item_ids[1]))
    assert result["skipped"] == 1 and len(result["history"]) == 1
    assert "count" not in result["history"][0]  # no co-occurrence matrix given


def test_bundle_explainer_reads_matrix_and_min_support(bundle_dir):
    from itemvec.query.embeddings import load_embeddings

    explainer = explainer_for_bundle(load_embeddings(bundle_dir), bundle_dir)
    assert explainer.cooccurrence is not None and explainer.min_support == 1
    results = explainer.recommend([str(explainer.embeddings.item_ids[0])], n=2)
    assert len(results) == 2 and all("count" in r["history"][0] for r in results)


def test_train_cli_rejects_min_support_below_one(cli, shop_files, tmp_path):
    code, _, err = cli(["train", shop_files[0], "--out", tmp_path / "m", "--min-support", "0",
                        "-q"])
    assert code == 2 and "cooccurrence.min_support must be >= 1" in err
