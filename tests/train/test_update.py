"""Incremental updates on a synthetic shop with planted categories.

The base bundle is trained on the older 70% of sessions with every 10th item removed; the update
brings the newer sessions, which include those held-out items. Known answers: the held-out items
are in the new bundle, their nearest neighbours are mostly in their hidden category, they are
recommended, the old bundle's files are byte-identical, and the lineage is in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from itemvec.cli.main import app
from itemvec.config import (
    FeatureConfig,
    IngestConfig,
    PipelineConfig,
    TrainingConfig,
    UpdateConfig,
)
from itemvec.data.ingest import EventLog
from itemvec.data.synth import generate
from itemvec.query.embeddings import load_embeddings
from itemvec.store.bundle import MANIFEST, load_cooccurrence, read_manifest
from itemvec.train.pipeline import train
from itemvec.train.update import (
    Parent,
    decay_factor,
    initial_rows,
    load_parent,
    plan_vocabulary,
    update,
)
from itemvec.util.errors import BundleError, ConfigError, ItemvecError

HELD_OUT_EVERY = 10  # items i0, i10, i20, ... appear only in the new events


@pytest.fixture(scope="module")
def shop():
    return generate(24_000, 300, n_categories=10, seed=3)


@pytest.fixture(scope="module")
def files(shop, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("update")
    events = shop.events
    cut = events["ts"].quantile(0.7)
    held = [f"i{i}" for i in range(0, 300, HELD_OUT_EVERY)]
    base = events.filter((pl.col("ts") <= cut) & ~pl.col("item_id").is_in(held))
    new = events.filter(pl.col("ts") > cut)
    paths = {"base": root / "base.csv", "new": root / "new.csv", "items": root / "items.csv"}
    base.write_csv(paths["base"])
    new.write_csv(paths["new"])
    shop.items.write_csv(paths["items"])
    config = PipelineConfig(ingest=IngestConfig(context="session_id", item="item_id", time="ts"),
                            training=TrainingConfig(dim=32, epochs=12, device="cpu"))
    paths["bundle"] = root / "base_bundle"
    train(paths["base"], config, out=paths["bundle"], progress=False)
    return paths


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def updated(files, tmp_path_factory) -> dict:
    """The CLI update of the base bundle, with the old bundle's digests before and after."""
    before = _digests(files["bundle"])
    out = tmp_path_factory.mktemp("updated") / "v2"
    result = CliRunner().invoke(app, ["update", str(files["bundle"]), str(files["new"]),
                                      "--items", str(files["items"]), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return {"out": out, "before": before, "after": _digests(files["bundle"]),
            "output": result.output}


def test_new_items_join_their_hidden_category(updated, shop):
    emb = load_embeddings(updated["out"])
    category = dict(zip(shop.items["item_id"], shop.items["category"], strict=True))
    held = [f"i{i}" for i in range(0, 300, HELD_OUT_EVERY)]
    present = [i for i in held if i in emb]
    assert len(present) >= 0.9 * len(held)
    neighbours, _ = emb.similar_items_batch(present, n=10)
    purity = np.mean([np.mean([category[j] == category[q] for j in row])
                      for q, row in zip(present, neighbours, strict=True)])
    assert purity > 0.6, purity  # 10 categories: chance is ~0.1


def test_new_items_are_recommended(updated, shop):
    """A history of a category's known items brings that category's new items near the top."""
    emb = load_embeddings(updated["out"])
    items = shop.items.with_columns(pl.col("item_id").str.slice(1).cast(pl.Int64).alias("n"))
    hits = []
    for cat in items["category"].unique().sort():
        members = items.filter(pl.col("category") == cat)
        new = [i for i, n in zip(members["item_id"], members["n"], strict=True)
               if n % HELD_OUT_EVERY == 0 and i in emb]
        old = [i for i, n in zip(members["item_id"], members["n"], strict=True)
               if n % HELD_OUT_EVERY and i in emb][:8]
        top, _ = emb.recommend(old, n=40)
        hits.extend(i in set(top) for i in new)
    assert np.mean(hits) > 0.5, np.mean(hits)  # 40 of ~290 candidates: chance ~0.14


def test_old_bundle_is_byte_identical(updated):
    assert updated["before"] == updated["after"]


def test_manifest_records_lineage(updated, files):
    manifest = read_manifest(updated["out"])
    lineage = manifest["lineage"]
    parent_manifest = files["bundle"] / MANIFEST
    assert lineage["parent"] == str(files["bundle"].resolve())
    assert lineage["parent_manifest_sha256"] == hashlib.sha256(
        parent_manifest.read_bytes()).hexdigest()
    assert lineage["parent_created"] == json.loads(parent_manifest.read_text())["created"]
    new = pl.read_csv(files["new"])
    assert lineage["data_range"]["min_time"] == pytest.approx(new["ts"].min())
    assert lineage["data_range"]["max_time"] == pytest.approx(new["ts"].max())
    added = lineage["added"]
    assert added["contexts"] + lineage["validation_contexts"] == new["session_id"].n_unique()
    assert 0.8 * new.height < added["events"] < new.height
    assert added["new_items"] == len(load_embeddings(updated["out"])) - lineage["parent_items"]
    assert added["new_items"] >= 27 and added["pairs"] > 1000
    assert lineage["generation"] == 1


def test_update_is_a_normal_bundle_with_grown_counts(updated, files):
    old, new = load_embeddings(files["bundle"]), load_embeddings(updated["out"])
    assert list(new.item_ids[:len(old)]) == list(old.item_ids)  # parent order kept, new appended
    counts_old, counts_new = load_cooccurrence(files["bundle"]), load_cooccurrence(updated["out"])
    assert counts_new.shape == (len(new), len(new))
    block = counts_new[:len(old), :len(old)]
    assert (block - counts_old).min() >= -1e-4 and block.sum() > counts_old.sum()
    assert (counts_new - counts_new.T).count_nonzero() == 0
    assert "category" in new.item_table.columns  # the --items table went in
    again = CliRunner().invoke(app, ["similar", str(updated["out"]), "i0", "--json"])
    assert again.exit_code == 0 and json.loads(again.output)["items"]


def test_refresh_keeps_the_parents_orientation(updated, files):
    """The default start is rotated onto the stored vectors: an item's vector stays near its
    parent vector (a fresh spectral start would be arbitrarily rotated, cosine ~0)."""
    old, new = load_embeddings(files["bundle"]), load_embeddings(updated["out"])
    assert read_manifest(updated["out"])["lineage"]["settings"]["start"] == "refresh"
    same = np.sum(old.vectors * new.vectors[:len(old)], axis=1)
    assert np.median(same) > 0.6, np.median(same)


def test_stored_start_continues_from_the_stored_weights(files, tmp_path):
    """--start stored: the touched-anchor schedule moves rows only a little from the parent."""
    result = update(files["bundle"], files["new"], out=tmp_path / "v2", progress=False,
                    settings=UpdateConfig(epochs=1, start="stored", anchors="touched"))
    old = load_embeddings(files["bundle"])
    same = np.sum(old.vectors * result.embeddings.vectors[:len(old)], axis=1)
    assert np.median(same) > 0.8, np.median(same)


def test_second_generation_and_decay(updated, files, tmp_path):
    """Updating an update: decayed counts, generation 2, the first update untouched."""
    before = _digests(updated["out"])
    result = update(updated["out"], files["new"], out=tmp_path / "v3", progress=False,
                    settings=UpdateConfig(epochs=1, decay_half_life="1d"))
    assert result.lineage["generation"] == 2
    # the parent's newest event and the new newest event coincide: no time passed, no decay
    assert result.lineage["decay_factor"] == pytest.approx(1.0)
    assert _digests(updated["out"]) == before


def test_refuses_to_overwrite_its_parent(files):
    result = CliRunner().invoke(app, ["update", str(files["bundle"]), str(files["new"]),
                                      "--out", str(files["bundle"])])
    assert result.exit_code != 0
    with pytest.raises(ItemvecError, match="bundle being updated"):
        update(files["bundle"], files["new"], out=files["bundle"], progress=False)


def test_bundle_without_counts_is_refused(files, tmp_path):
    emb = load_embeddings(files["bundle"])
    emb.save(tmp_path / "bare")
    with pytest.raises(BundleError, match="co-occurrence"):
        load_parent(tmp_path / "bare")


# -- pieces with exact answers -------------------------------------------------------------------
def _log(item_ids, contexts, times=None) -> EventLog:
    items = np.concatenate(contexts).astype(np.int32)
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in contexts])]).astype(np.int64)
    return EventLog(np.asarray(item_ids, dtype=object), np.asarray(
        [f"c{i}" for i in range(len(contexts))], dtype=object), indptr, items,
        np.ones(len(items), np.float32), times, ordered=True)


def extended(parent: list[str], log, min_count: int = 1):
    plan = plan_vocabulary(np.asarray(parent, dtype=object), len(parent), log, min_count)
    return plan.vocabulary, plan.log


def test_plan_vocabulary_appends_new_items_and_reindexes():
    log = _log(["x", "a", "y", "b"], [[0, 1], [2, 3, 0], [2]])
    vocab, mapped = extended(["a", "b", "c"], log)
    assert list(vocab) == ["a", "b", "c", "x", "y"]
    assert mapped.items.tolist() == [3, 0, 4, 1, 3, 4]
    assert mapped.indptr.tolist() == log.indptr.tolist()
    vocab, mapped = extended(["a", "b"], log, min_count=2)
    assert list(vocab) == ["a", "b", "x", "y"]  # x and y are in 2 contexts each
    vocab, mapped = extended(["a", "b"], _log(["x", "a"], [[0, 1]]), min_count=2)
    assert list(vocab) == ["a", "b"] and mapped.items.tolist() == [0]


def test_new_rows_start_at_their_neighbours():
    old = np.asarray([[2.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    # item 2 co-occurs with item 0 only; item 3 with item 2 only (reached in the second pass)
    counts = sp.csr_matrix(np.asarray([[0, 0, 5, 0], [0, 0, 0, 0], [5, 0, 0, 1], [0, 0, 1, 0]],
                                      dtype=np.float32))
    vectors, bias = initial_rows(counts, old, np.asarray([0.5, -0.5], np.float32), 2,
                                 "neighbours", seed=0)
    np.testing.assert_allclose(vectors, [[2.0, 0.0], [2.0, 0.0]], atol=1e-6)
    assert bias.shape == (2,) and np.isfinite(bias).all()


def test_decay_factor_halves_per_half_life():
    log = _log(["a", "b"], [[0, 1]], times=np.asarray([150.0, 200.0]))
    parent = Parent.__new__(Parent)
    parent.manifest = {"lineage": {"data_range": {"max_time": 100.0}}}
    assert decay_factor(parent, log, 100.0) == pytest.approx(0.5)
    assert decay_factor(parent, log, None) == 1.0
    parent.manifest = {}  # a bundle from `train`: the new data is taken to follow on
    assert decay_factor(parent, log, 50.0) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="--time"):
        decay_factor(parent, _log(["a", "b"], [[0, 1]]), 10.0)


def test_update_config_validates():
    with pytest.raises(ConfigError, match="update.anchors"):
        UpdateConfig(anchors="some")
    with pytest.raises(ConfigError, match="update.start"):
        UpdateConfig(start="scratch")
    with pytest.raises(ConfigError, match="duration"):
        UpdateConfig(decay_half_life="soon")
    assert UpdateConfig(decay_half_life="2d").decay_half_life == 2 * 86400


def test_feature_bundle_warms_cold_items_from_features(shop, files, tmp_path):
    """A bundle trained with an item table: held-out items were cold (features only) in it;
    the update gives them id rows started from their features, and brand-new items missing
    from the table start from their neighbours."""
    held = [f"i{i}" for i in range(0, 300, HELD_OUT_EVERY)]
    table = tmp_path / "items.csv"
    shop.items.filter(~pl.col("item_id").is_in(held[:5])).select(
        "item_id", "category", "brand").write_csv(table)
    config = PipelineConfig(ingest=IngestConfig(context="session_id", item="item_id", time="ts"),
                            training=TrainingConfig(dim=16, epochs=4, device="cpu"),
                            side=FeatureConfig(items=table))
    train(files["base"], config, out=tmp_path / "base", progress=False)
    parent = load_parent(tmp_path / "base")
    assert parent.n_warm == parent.n_items - (len(held) - 5)  # held-out items with a row: cold
    result = update(tmp_path / "base", files["new"], out=tmp_path / "v2", progress=False,
                    settings=UpdateConfig(epochs=2))
    assert result.lineage["new_items_placed_from_features"] == len(held) - 5
    assert result.lineage["added"]["new_items"] == len(held)
    child = load_parent(tmp_path / "v2")
    assert child.n_warm == child.n_items == parent.n_items + 5
    emb = load_embeddings(tmp_path / "v2")
    category = dict(zip(shop.items["item_id"], shop.items["category"], strict=True))
    neighbours, _ = emb.similar_items_batch(held, n=10)
    purity = np.mean([np.mean([category[j] == category[q] for j in row])
                      for q, row in zip(held, neighbours, strict=True)])
    assert purity > 0.6, purity


def test_an_fp16_bundle_updates_on_the_cpu_in_fp32():
    from itemvec.train.update import _precision_here

    assert _precision_here(TrainingConfig(precision="fp16", device="cpu")) == "fp32"
    assert _precision_here(TrainingConfig(precision="bf16", device="cpu")) == "bf16"
