"""The benchmark suite: known answers for its pieces and a quick end-to-end run on groceries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from benchmarks import sequential
from benchmarks.methods import ease_weights, sample_grid, sar_similarity
from benchmarks.protocol import decode_hits, popularity_strata, stratified_hr
from benchmarks.report import geometric_mean_ratio
from itemvec.evaluation.protocol import Queries, target_ranks

DATA = Path(__file__).parents[1].parent / "shared" / "data"


def test_ease_woodbury_matches_direct_solution():
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((30, 12)) < 0.3).astype(np.float32))
    direct = ease_weights(x, 5.0)  # more contexts than items: item-side solve
    wide = ease_weights(sp.csr_matrix(x[:8]), 5.0)  # fewer contexts: Woodbury branch
    gram = (x[:8].T @ x[:8]).toarray() + 5.0 * np.eye(12)
    p = np.linalg.inv(np.asarray(gram))
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(wide, expected, atol=1e-4)
    assert np.allclose(np.diag(direct), 0.0)
    full = np.linalg.inv((x.T @ x).toarray() + 5.0 * np.eye(12))
    reference = -full / np.diag(full)[None, :]
    np.fill_diagonal(reference, 0.0)
    np.testing.assert_allclose(direct, reference, atol=1e-4)


def test_sar_similarities_known_values():
    counts = sp.csr_matrix(np.array([[0, 2, 0], [2, 0, 1], [0, 1, 0]], dtype=np.float32))
    occurrences = np.array([4.0, 2.0, 1.0])
    cosine = sar_similarity(counts, occurrences, "cosine").toarray()
    assert cosine[0, 1] == pytest.approx(2 / math.sqrt(8))
    assert sar_similarity(counts, occurrences, "jaccard").toarray()[0, 1] == pytest.approx(0.5)
    assert sar_similarity(counts, occurrences, "lift").toarray()[1, 2] == pytest.approx(0.5)
    conditional = sar_similarity(counts, occurrences, "conditional").toarray()
    assert conditional[0, 1] == pytest.approx(0.5) and conditional[1, 0] == pytest.approx(1.0)


def test_popularity_strata_hold_thirds_of_the_mass():
    counts = np.array([60, 20, 10, 5, 3, 2])  # total 100
    strata = popularity_strata(counts)
    assert strata.tolist() == [0, 1, 2, 2, 2, 2]
    ranks = np.array([0, 30, 5, 50])
    hr = stratified_hr(ranks, np.array([0, 0, 1, 5]), strata)
    assert hr["head"] == 0.5 and hr["torso"] == 1.0 and hr["tail"] == 0.0


def test_sample_grid_is_distinct_and_starts_with_default():
    space = {"a": (1, 2, 3), "b": (0.1, 0.2)}
    grid = sample_grid(space, 4, first={"a": 2, "b": 0.1})
    assert grid[0] == {"a": 2, "b": 0.1} and len(grid) == 4
    assert len({tuple(g.items()) for g in grid}) == 4


def test_geometric_mean_ratio():
    def block(values):
        return {"methods": {m: {"tasks": {t: {"HR@20": v} for t in ("i2i", "s2i")}}
                            for m, v in values.items()}}
    results = {"datasets": {"a": block({"itemvec": 0.2, "popularity": 0.1, "itemknn": 0.4}),
                            "b": block({"itemvec": 0.3, "ease": 0.3})}}
    ratio, rows = geometric_mean_ratio(results)
    assert len(rows) == 4 and rows[0][3] == "itemknn"
    assert ratio == pytest.approx(math.sqrt(0.5))


@pytest.mark.skipif(not (DATA / "groceries").is_dir(), reason="shared data not present")
def test_quick_run_on_groceries(tmp_path):
    from benchmarks.run import main

    for methods in ("popularity,itemknn", "ease"):  # a second run merges into the first
        main(["--datasets", "groceries", "--methods", methods, "--quick",
              "--out", str(tmp_path), "--no-readme"])
    results = json.loads((tmp_path / "results.json").read_text())
    block = results["datasets"]["groceries"]
    assert block["stats"]["items"] == 169 and block["stats"]["context_kind"] == "basket"
    for method in ("popularity", "itemknn", "ease"):
        for task in ("i2i", "s2i"):
            entry = block["methods"][method]["tasks"][task]
            assert 0.2 < entry["HR@20"] <= 1.0 and entry["NDCG@20"] <= entry["HR@20"]
            assert entry["queries"] == block["stats"]["test_queries"][task] > 500
            hits = decode_hits(entry["hits"], entry["queries"])
            assert hits.mean() == pytest.approx(entry["HR@20"])
    # every basket method sees the same queries; co-occurrence must find more than chance
    assert block["methods"]["itemknn"]["tasks"]["s2i"]["MRR@20"] > 0.1
    assert (tmp_path / "groceries.md").read_text().startswith("# groceries")
    assert (tmp_path / "hr20.png").stat().st_size > 1000


@pytest.mark.skipif(not (DATA / "groceries").is_dir(), reason="shared data not present")
def test_quick_item2vec_on_groceries(tmp_path):
    pytest.importorskip("gensim")
    from benchmarks.run import main

    main(["--datasets", "groceries", "--methods", "item2vec", "--quick",
          "--out", str(tmp_path), "--no-readme"])
    entry = json.loads((tmp_path / "results.json").read_text())["datasets"]["groceries"]
    i2v = entry["methods"]["item2vec"]
    assert i2v["tasks"]["s2i"]["HR@20"] > 0.2
    probe = i2v["probe"]["level1"]
    assert probe["classes"] == 10 and probe["accuracy"] > probe["majority_accuracy"]


def test_hits_round_trip_through_base64():
    from benchmarks.protocol import encode_hits

    rank = np.array([0, 19, 20, 5, 100, 3, 7, 40, 1, 2, 25])
    assert decode_hits(encode_hits(rank), len(rank)).tolist() == (rank < 20).tolist()


def test_paired_bootstrap_intervals_know_ties_from_wins():
    from benchmarks.significance import PairedCell, intervals

    rng = np.random.default_rng(1)
    peer = rng.random(2000) < 0.3
    tie = PairedCell("a", "s2i", "ease", peer.copy(), peer)
    better = PairedCell("b", "s2i", "ease", peer | (rng.random(2000) < 0.15), peer)
    assert tie.discordant == (0, 0) and better.discordant[1] == 0
    (tie_ci, better_ci), overall = intervals([tie, better], draws=500)
    assert tie_ci == (1.0, 1.0)  # identical hits: every draw gives the same ratio
    assert better_ci[0] > 1.2 and better_ci[0] < better.ratio < better_ci[1]
    assert 1.0 < overall[0] < overall[1] < better.ratio


def test_seeds_table_takes_one_ratio_per_run(tmp_path):
    from benchmarks.seeds import collect, markdown

    for seed, ours in ((0, 0.2), (1, 0.5)):
        methods = {m: {"tasks": {t: {"HR@20": v} for t in ("i2i", "s2i")}}
                   for m, v in (("itemvec", ours), ("ease", 0.4))}
        block = {"stats": {"seed": seed}, "methods": methods}
        (tmp_path / str(seed)).mkdir()
        (tmp_path / str(seed) / "results.json").write_text(
            json.dumps({"datasets": {"a": block}}))
    cells = collect([tmp_path / "0", tmp_path / "1"])
    assert cells[("a", "s2i")] == [(0, 0.5, "ease"), (1, 1.25, "ease")]
    row = markdown(cells).splitlines()[2]
    assert "| 0.791 | 1/2 |" in row  # sqrt(0.5 * 1.25)


def test_windows_cover_every_transition_once():
    pieces = sequential.windows([np.arange(5), np.arange(1)], max_len=2)
    assert [p.tolist() for p in pieces] == [[2, 3, 4], [0, 1, 2]]


def _cycles(n_items: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [(rng.integers(n_items) + np.arange(rng.integers(2, 10))) % n_items
            for _ in range(count)]


@pytest.mark.parametrize("kind", sequential.KINDS)
def test_sequential_peers_learn_a_planted_successor(kind):
    """Item i is always followed by i + 1 (mod n): the next item must rank near the top
    (chance: 5 % in the top 5 of 100 items)."""
    rng, n = np.random.default_rng(0), 100
    train, held = _cycles(n, 400, rng), _cycles(n, 150, rng)
    valid = Queries([c[:-1] for c in held], np.array([c[-1] for c in held]))
    config = sequential.SeqConfig(kind=kind, dim=32, max_len=8, batch_size=64, lr=1e-2,
                                  max_epochs=15, patience=3)
    model, log = sequential.fit(train, n, valid, config)
    ranks = target_ranks(sequential.SequenceScorer(model, config.max_len, n), valid)
    assert (ranks < 5).mean() > 0.9 and log.best_hr > 0.95
    assert log.curve[log.best_epoch - 1] == max(log.curve) and log.device in ("cpu", "cuda")


def test_sequential_peers_run_on_sessions_only():
    from types import SimpleNamespace

    from benchmarks.methods import get

    for ordered in (True, False):
        data = SimpleNamespace(train=SimpleNamespace(ordered=ordered))
        assert get("sasrec").applies(data) is ordered and get("gru4rec").applies(data) is ordered
        assert get("itemvec").applies(data)
