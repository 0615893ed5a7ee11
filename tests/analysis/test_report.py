"""The HTML report and its measurements (popularity strata, category probe, cluster purity)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from itemvec.analysis.report import category_scores, neighbour_table
from itemvec.data.synth import generate, write  # noqa: E402
from itemvec.evaluation.protocol import STRATA, hit_rate_by_popularity, popularity_strata
from itemvec.query.embeddings import ItemEmbeddings  # noqa: E402


def test_popularity_strata_follow_the_ranking():
    counts = np.arange(1, 201)[::-1].astype(float)  # item 0 most popular
    strata = popularity_strata(counts)
    assert strata[0] == 0 and strata[1] == 0 and strata[2] == 1  # top 1% of 200 = 2 items
    assert strata[-1] == len(STRATA) - 1
    assert (np.diff(strata) >= 0).all()
    assert np.bincount(strata).tolist() == [2, 8, 30, 60, 100]


def test_hit_rate_by_popularity_known_answer():
    counts = np.arange(1, 101)[::-1].astype(float)  # 100 items, item 0 most popular
    targets = np.array([0, 0, 50, 99])
    ranks = np.array([0, 30, 5, 40])
    result = hit_rate_by_popularity(ranks, targets, counts, k=20)
    assert result["top 1%"] == 0.5
    assert result["bottom 50%"] == 0.5  # item 50 hit, item 99 missed
    assert result["1-5%"] is None


def clustered(n_per: int = 40, groups: int = 5, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim)) * 3
    labels = np.repeat(np.arange(groups), n_per)
    vectors = centres[labels] + rng.normal(size=(len(labels), dim)) * 0.3
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), np.asarray([f"g{g}" for g in labels], dtype=object)


def test_category_scores_find_planted_groups_and_not_random_ones():
    vectors, labels = clustered()
    emb = ItemEmbeddings([str(i) for i in range(len(labels))], vectors)
    rows = np.arange(len(labels))
    neighbours = neighbour_table(emb, rows, 10)
    good = category_scores(vectors, labels, neighbours, rows)
    assert good["neighbour_agreement"] > 0.95 and good["chance_agreement"] < 0.25
    assert good["probe_accuracy"] > 0.9 and good["majority_accuracy"] < 0.4
    assert good["purity"] > 0.9 and good["nmi"] > 0.9
    shuffled = np.random.default_rng(1).permutation(labels)
    bad = category_scores(vectors, shuffled, neighbours, rows)
    assert bad["neighbour_agreement"] < 0.4 and bad["purity"] < 0.6


def test_report_from_evaluate_out(tmp_path, cli):
    events, items = write(generate(4000, 80, n_categories=4, seed=2), tmp_path / "ev.csv")
    code, _, err = cli(["evaluate", events, "--time", "ts", "--items", items, "--out",
                        tmp_path / "model", "--json", tmp_path / "metrics.json", "--quiet"])
    assert code == 0, err
    stored = json.loads((tmp_path / "model" / "evaluation.json").read_text())
    assert stored == json.loads((tmp_path / "metrics.json").read_text())
    assert set(stored["by_popularity"]["s2i"]) == set(stored["results"]["s2i"])
    code, out, err = cli(["report", tmp_path / "model", "--out", tmp_path / "r.html",
                          "--method", "pca", "-q"])
    assert code == 0, err
    assert "with evaluation metrics" in out
    page = (tmp_path / "r.html").read_text()
    assert not re.search(r"""(src|href)=["']?https?:""", page) and "<link" not in page
    for heading in ("Held-out metrics", "Popularity strata", "Categories", "Item map",
                    "Training", "Example neighbours"):
        assert f"<h2>{heading}</h2>" in page, heading
    assert "hit rate by target popularity" not in page  # that is inside a PNG, not text
    hr = stored["results"]["s2i"]["itemvec"]["HR@20"]
    assert f"{hr:.4f}" in page
    assert page.count("data:image/png;base64,") == 4  # methods, popularity, map, curves
    assert "linear probe accuracy" in page
    assert re.search(r"(session|basket) \(from the data: [^<]+\)", page)  # kind, and why


def test_report_without_evaluation_and_bad_inputs(tmp_path, cli, bundle_dir):
    code, out, err = cli(["report", bundle_dir, "--out", tmp_path / "r.html", "--method", "pca",
                          "-q"])
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "No evaluation found" in page and "No category column" in page
    code, _, err = cli(["report", bundle_dir, "--out", tmp_path / "r.pdf"])
    assert code == 2 and ".html" in err
    code, _, err = cli(["report", bundle_dir, "--out", tmp_path / "r.html", "--evaluation",
                        tmp_path / "missing.json"])
    assert code == 2 and "missing.json" in err
    (tmp_path / "bad.json").write_text("{nope")
    code, _, err = cli(["report", bundle_dir, "--out", tmp_path / "r.html", "--evaluation",
                        tmp_path / "bad.json"])
    assert code == 2 and "not valid JSON" in err
    code, _, err = cli(["report", tmp_path / "nowhere", "--out", tmp_path / "r.html"])
    assert code == 2 and "Traceback" not in err
