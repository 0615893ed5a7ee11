"""A catalogue as the item table, stored compactly: cold items with identical feature rows share
one stored vector, and ``itemvec embed`` adds a slice by writing only what changed.

Planted: the catalogue is the shop's items plus clones (new ids) copying a random item's
category, brand and price, so the number of distinct cold vectors is known in advance.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import polars as pl
import pytest

from itemvec.config import IngestConfig, PipelineConfig
from itemvec.data.ingest import ROW, build_log
from itemvec.data.synth import generate
from itemvec.model.features import SPEC_FILE, SideInformation
from itemvec.query.embeddings import load_embeddings
from itemvec.store.bundle import MANIFEST, ROWS_FILE, read_manifest
from itemvec.store.embed import embed_into_bundle
from itemvec.train.pipeline import save_model, train_on_log
from itemvec.train.update import load_parent, update_log
from itemvec.util.files import sha256_file

FIELDS = ["category", "brand", "price"]
CLONES = 400


def config() -> PipelineConfig:
    c = PipelineConfig(ingest=IngestConfig(time="ts"))
    c.training.device, c.training.epochs, c.training.dim = "cpu", 2, 16
    return c


def _log(events: pl.DataFrame, name: str):
    table = pl.DataFrame({"context": events["session_id"], "item": events["item_id"],
                          ROW: np.arange(events.height), "time": events["ts"],
                          "weight": np.ones(events.height, np.float32)})
    return build_log(table, IngestConfig(time="ts"), name)


@pytest.fixture(scope="module")
def shop():
    return generate(6_000, 120, 6, seed=4)


@pytest.fixture(scope="module")
def catalogue(shop):
    log = _log(shop.events, "synth")
    items = shop.items.select("item_id", *FIELDS)
    clones = items.sample(CLONES, with_replacement=True, seed=1).with_columns(
        pl.format("x{}", pl.int_range(pl.len())).alias("item_id"))
    table = pl.concat([items, clones])
    model = train_on_log(log, config(), item_table=table, side=SideInformation(table),
                         progress=False)
    return model, table


@pytest.fixture(scope="module")
def bundle(catalogue, tmp_path_factory):
    model, _ = catalogue
    return save_model(model, tmp_path_factory.mktemp("catalogue") / "b", config())


def _distinct_cold_rows(emb, table: pl.DataFrame) -> int:
    """Distinct raw feature rows of cold items (prices are binned: featurised rows may be
    fewer)."""
    cold = set(emb.item_ids[emb.n_warm:].tolist())
    return table.filter(pl.col("item_id").is_in(list(cold))).select(FIELDS).unique().height


def test_items_with_identical_features_share_one_stored_vector(catalogue, bundle):
    model, table = catalogue
    emb = model.embeddings
    assert emb.compact and len(emb) - emb.n_warm >= CLONES
    stored_cold = emb.stored_vectors[emb.n_warm:]
    assert 0 < len(stored_cold) <= _distinct_cold_rows(emb, table) < len(emb) - emb.n_warm
    assert len(np.unique(stored_cold, axis=0)) == len(stored_cold)  # no vector stored twice
    features = {row[0]: row[1:] for row in table.iter_rows()}
    rows = emb.vector_rows[emb.n_warm:]
    by_features: dict[tuple, set] = {}
    for item, row in zip(emb.item_ids[emb.n_warm:], rows, strict=True):
        by_features.setdefault(features[item], set()).add(int(row))
    assert all(len(r) == 1 for r in by_features.values())  # same features, one stored row
    manifest = read_manifest(bundle)
    assert manifest["format_version"] == 2 and manifest["stored_vectors"] == len(
        emb.stored_vectors)
    loaded = load_embeddings(bundle)
    clone = emb.item_ids[-1]
    twin = next(i for i in emb.item_ids[emb.n_warm:-1]
                if features[i] == features[clone])  # another cold item, same features
    np.testing.assert_array_equal(loaded[clone], loaded[twin])
    assert loaded.item_bias[loaded.row(clone)] == loaded.item_bias[loaded.row(twin)]


def _slice(table: pl.DataFrame, novel: bool) -> pl.DataFrame:
    """New ids copying cold clones' features; with ``novel`` one more with an unseen mix."""
    known = table.tail(3).with_columns(pl.format("new{}", pl.int_range(pl.len())).alias(
        "item_id"))
    if not novel:
        return known
    odd = table.head(1).with_columns(pl.lit("new-odd").alias("item_id"),
                                     pl.lit("never-seen").alias("category"))
    return pl.concat([known, odd])


def _inode(path) -> int:
    return os.stat(path).st_ino


@pytest.mark.parametrize("novel", [False, True])
def test_embed_writes_only_what_changed(catalogue, bundle, tmp_path, novel):
    _, table = catalogue
    new = _slice(table, novel)
    out, report = embed_into_bundle(bundle, new, tmp_path / "c")
    assert report["embedded"] == new.height and report["new_vectors"] == int(novel)
    before, after = read_manifest(bundle), read_manifest(out)
    linked = ["encoder.safetensors", SPEC_FILE] + ([] if novel else ["embeddings.npy"])
    for name in linked:
        assert after["files"][name] == before["files"][name]  # digest carried over
        assert (out / name).read_bytes() == (bundle / name).read_bytes()
        assert _inode(out / name) == _inode(bundle / name)  # hard-linked, not copied
    old = np.load(bundle / "embeddings.npy")
    grown = np.load(out / "embeddings.npy")
    np.testing.assert_array_equal(grown[:len(old)], old)  # stored rows keep their place
    assert len(grown) == len(old) + int(novel)
    for name in after["files"]:  # carried digests are the real ones: the bundle verifies
        assert sha256_file(out / name) == after["files"][name]
    emb = load_embeddings(out)
    source = load_embeddings(bundle)
    for i, item in enumerate(new["item_id"].to_list()[:3]):
        twin = table.tail(3)["item_id"][i]
        np.testing.assert_array_equal(emb[item], source[twin])
        assert emb.row(item) >= emb.n_warm and emb.is_cold(np.array([item]))[0]
    ids, _ = emb.similar_items(new["item_id"][0], n=5, cold="include")
    assert len(ids) == 5
    assert new["item_id"][0] in emb.similar_items(emb.item_ids[0], n=len(emb) - 1,
                                                  cold="include").ids


def _as_format_1(bundle, target) -> None:
    """``bundle`` rewritten as itemvec wrote it before compact storage: every item's vector in
    embeddings.npy, no row index, format 1."""
    shutil.copytree(bundle, target)
    emb = load_embeddings(bundle)
    np.save(target / "embeddings.npy", emb.vectors, allow_pickle=False)
    (target / ROWS_FILE).unlink()
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["format_version"] = 1
    del manifest["stored_vectors"], manifest["files"][ROWS_FILE]
    manifest["files"]["embeddings.npy"] = sha256_file(target / "embeddings.npy")
    (target / MANIFEST).write_text(json.dumps(manifest))


def test_format_1_bundle_loads_and_embed_compacts_it(catalogue, bundle, tmp_path):
    _, table = catalogue
    _as_format_1(bundle, tmp_path / "old")
    old, compact = load_embeddings(tmp_path / "old"), load_embeddings(bundle)
    assert not old.compact
    items = [old.item_ids[0], old.item_ids[-1]]
    for a, b in ((old.similar_items_batch(items, n=30), compact.similar_items_batch(items, n=30)),
                 (old.recommend_batch([items], n=30), compact.recommend_batch([items], n=30))):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    out, report = embed_into_bundle(tmp_path / "old", _slice(table, False), tmp_path / "new")
    assert read_manifest(out)["format_version"] == 2
    np.testing.assert_array_equal(np.load(out / "embeddings.npy"),
                                  np.load(bundle / "embeddings.npy"))
    assert report["embedded"] == 3 and load_embeddings(out).compact


def test_update_keeps_cold_items_compact(shop, bundle):
    events = shop.events.filter(pl.col("ts") > shop.events["ts"].quantile(0.8))
    result = update_log(load_parent(bundle), _log(events, "new"), progress=False)
    emb, parent = result.embeddings, load_embeddings(bundle)
    assert emb.compact and len(emb) - emb.n_warm >= CLONES  # the clones never occur: cold
    assert len(emb.stored_vectors) == emb.n_warm + len(np.unique(emb.vectors[emb.n_warm:],
                                                                 axis=0))
    clone = parent.item_ids[-1]
    np.testing.assert_allclose(emb[clone], parent[clone], atol=1e-5)


def test_embed_in_place_keeps_a_verifiable_bundle(catalogue, bundle, tmp_path):
    _, table = catalogue
    target = tmp_path / "b"
    shutil.copytree(bundle, target)
    encoder = os.stat(target / "encoder.safetensors").st_ino
    out, report = embed_into_bundle(target, _slice(table, True))  # linked from the old files
    assert out == target and report["embedded"] == 4
    assert os.stat(target / "encoder.safetensors").st_ino == encoder  # the old file lives on
    emb = load_embeddings(target)  # every checksum verified, carried ones included
    assert "new-odd" in emb and emb.is_cold(np.array(["new-odd"]))[0]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left


def test_rewriting_the_old_bundle_leaves_a_linked_one_intact(catalogue, bundle, tmp_path):
    """Hard links share bytes: every later write to the old bundle (embed in place) must go to
    new files renamed into place, never through the shared inodes."""
    _, table = catalogue
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    out, _ = embed_into_bundle(old, _slice(table, False), tmp_path / "new")
    linked = [p.name for p in out.iterdir() if os.stat(p).st_nlink > 1]
    assert "encoder.safetensors" in linked and "embeddings.npy" in linked
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    embed_into_bundle(old, _slice(table, True))  # in place: new vectors, new parts
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    load_embeddings(out)
    load_embeddings(old)


def test_re_embedded_items_leave_no_unreferenced_stored_vectors(catalogue, bundle, tmp_path):
    """An item embedded again with new features gets a new vector; its old one, if no other
    item uses it, must not stay in embeddings.npy forever (a catalogue refreshed nightly would
    grow it by every changed item's old vector)."""
    _, table = catalogue
    target = tmp_path / "b"
    shutil.copytree(bundle, target)
    categories = table["category"].unique(maintain_order=True).to_list()
    brands = table["brand"].unique(maintain_order=True).to_list()
    grew = 0
    for round_ in range(3):  # mixes of known values no item has: a new vector each round
        odd = table.head(1).with_columns(pl.lit("new-odd").alias("item_id"),
                                         pl.lit(categories[round_]).alias("category"),
                                         pl.lit(brands[-1 - round_]).alias("brand"),
                                         pl.lit(-1000.0 * (round_ + 1)).alias("price"))
        grew += embed_into_bundle(target, odd)[1]["new_vectors"]
        emb = load_embeddings(target)
        used = np.unique(emb.vector_rows[emb.n_warm:])
        assert len(emb.stored_vectors) == emb.n_warm + len(used), f"round {round_}"
    assert grew >= 2
    source = load_embeddings(bundle)
    for item in source.item_ids[source.n_warm:]:  # everything else kept its vector
        np.testing.assert_array_equal(emb[item], source[item])
