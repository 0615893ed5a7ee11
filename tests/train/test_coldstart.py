"""Behaviour-first side information: warm items untouched, cold items placed and calibrated.

Known answers from the planted shop (itemvec.data.synth): sessions stay inside a hidden category, so
a cold item's features (category, brand, price) must put it among warm items of its category;
and the behaviour-first warm vectors must be exactly the behaviour-only ones (same seed).
"""

import json

import numpy as np
import polars as pl
import pytest
import torch

from itemvec.config import FeatureConfig, IngestConfig, PipelineConfig
from itemvec.data.ingest import ROW, build_log
from itemvec.data.synth import generate
from itemvec.model.features import SPEC_FILE, SideInformation, load_feature_encoder
from itemvec.query.embeddings import load_embeddings
from itemvec.store.bundle import load_encoder_state
from itemvec.store.embed import embed_into_bundle
from itemvec.train.pipeline import save_model, side_information, train_on_log
from itemvec.util.errors import ConfigError

N_ITEMS, N_CATEGORIES = 240, 8


@pytest.fixture(scope="module")
def shop():
    shop = generate(16_000, N_ITEMS, N_CATEGORIES, seed=2)
    hidden = set(np.random.default_rng(0).choice(shop.items["item_id"].to_numpy(), 24,
                                                 replace=False).tolist())
    events = shop.events.filter(~pl.col("item_id").is_in(list(hidden)))
    table = pl.DataFrame({"context": events["session_id"], "item": events["item_id"],
                          ROW: np.arange(events.height), "time": events["ts"],
                          "weight": np.ones(events.height, np.float32)})
    log = build_log(table, IngestConfig(time="ts"), "synth")
    items = shop.items.select("item_id", "category", "brand", "price")
    return shop, hidden, log, items


def config() -> PipelineConfig:
    c = PipelineConfig(ingest=IngestConfig(time="ts"))
    c.training.device, c.training.epochs, c.training.dim = "cpu", 8, 32
    return c


@pytest.fixture(scope="module")
def models(shop):
    _, _, log, items = shop
    behaviour = train_on_log(log, config(), progress=False)
    first = train_on_log(log, config(), item_table=items, side=SideInformation(items),
                         progress=False)
    return behaviour, first


def test_warm_items_are_exactly_the_behaviour_model(models):
    behaviour, first = models
    n = len(behaviour.embeddings)
    np.testing.assert_array_equal(first.embeddings.item_ids[:n], behaviour.embeddings.item_ids)
    np.testing.assert_allclose(first.embeddings.vectors[:n], behaviour.embeddings.vectors,
                               atol=1e-6)
    np.testing.assert_allclose(first.embeddings.item_bias[:n], behaviour.embeddings.item_bias,
                               atol=1e-6)
    # query settings as tuned without features; only the similar calibration of cold items added
    assert first.embeddings.query.replace(cold_similarity_offset=None) == \
        behaviour.embeddings.query
    # the stored encoder gives the same warm vectors (what `itemvec update` starts from)
    vectors, _ = first.training.encoder.export()
    np.testing.assert_allclose(vectors[:n], behaviour.embeddings.vectors, atol=1e-5)


def test_cold_items_land_near_their_hidden_category(models, shop):
    _, first = models
    catalogue, hidden, _, _ = shop
    emb = first.embeddings
    assert set(emb.item_ids[len(emb) - len(hidden):]) == hidden
    category = dict(zip(catalogue.items["item_id"], catalogue.items["category"], strict=True))
    share = []
    for item in hidden:
        ids, _ = emb.similar_items(item, n=10, exclude=hidden)
        share.append(np.mean([category[i] == category[item] for i in ids]))
    assert np.mean(share) > 0.8  # chance: 1 / N_CATEGORIES
    report = first.stats["coldstart"]
    assert report["mode"] == "behaviour-first" and report["calibration"]["method"] == "validation"
    assert report["pseudo_cold"] > 0 and np.isfinite(emb.item_bias).all()


def test_calibration_offset_is_stored_and_applied_by_embed(models, shop, tmp_path):
    _, first = models
    catalogue, hidden, _, items = shop
    bundle = save_model(first, tmp_path / "b", config())
    stored = json.loads((bundle / SPEC_FILE).read_text())
    offset = stored["coldstart"]["offset"]
    assert "curve" in stored["coldstart"]["calibration"]
    state = load_encoder_state(bundle)
    assert float(state["cold_offset"]) == pytest.approx(offset) and bool(state["id_only"])
    # a new item with the features of a cold one gets that cold item's vector and logit
    cold = sorted(hidden)[0]
    new = items.filter(pl.col("item_id") == cold).with_columns(pl.lit("brand-new").alias(
        "item_id"))
    out, report = embed_into_bundle(bundle, new, tmp_path / "c")
    assert report["embedded"] == 1
    before, after = load_embeddings(bundle), load_embeddings(out)
    i, j = before.index[cold], after.index["brand-new"]
    np.testing.assert_allclose(after.vectors[j], before.vectors[i], atol=1e-5)
    assert after.item_bias[j] == pytest.approx(before.item_bias[i], abs=1e-4)
    # and the logit is the regressed one plus the stored offset
    spec, encoder = load_feature_encoder({SPEC_FILE: (bundle / SPEC_FILE).read_bytes()}, state)
    with torch.no_grad():
        encoder.cold_offset.zero_()
        _, raw = encoder.embed_features([spec.transform(new)[n] for n in spec.names])
    assert after.item_bias[j] == pytest.approx(raw[0] + offset, abs=1e-4)


def test_joint_mode_still_trains_features_with_behaviour(models, shop):
    behaviour, _ = models
    catalogue, hidden, log, items = shop
    joint = train_on_log(log, config(), item_table=items,
                         side=SideInformation(items, config=FeatureConfig(mode="joint")),
                         progress=False)
    emb, n = joint.embeddings, len(behaviour.embeddings)
    assert len(emb) == n + len(hidden) and "coldstart" not in joint.stats
    assert not bool(joint.training.encoder.id_only)
    assert not np.allclose(emb.vectors[:n], behaviour.embeddings.vectors, atol=1e-3)
    category = dict(zip(catalogue.items["item_id"], catalogue.items["category"], strict=True))
    ids, _ = emb.similar_items(sorted(hidden)[0], n=10, exclude=hidden)
    assert np.mean([category[i] == category[sorted(hidden)[0]] for i in ids]) > 0.5


def test_mode_is_validated_with_field_value_and_choices(shop):
    with pytest.raises(ConfigError, match=r"side.mode must be one of behaviour-first, joint"):
        FeatureConfig(mode="eges")
    with pytest.raises(ConfigError, match=r"side.holdout must be in \(0, 0.5\), got 0.9"):
        FeatureConfig(holdout=0.9)
    _, _, _, items = shop
    assert side_information(items, FeatureConfig(mode="joint")).config.mode == "joint"
    assert side_information(items, FeatureConfig(features="none")) is None  # table kept only


def test_update_of_a_behaviour_first_bundle_keeps_the_calibration(models, shop, tmp_path):
    from itemvec.train.update import load_parent, update_log

    _, first = models
    catalogue, hidden, _, items = shop
    bundle = save_model(first, tmp_path / "b", config())
    events = catalogue.events.filter(pl.col("item_id").is_in(sorted(hidden)[:12]) |
                                     (pl.col("ts") > catalogue.events["ts"].quantile(0.8)))
    frame = pl.DataFrame({"context": events["session_id"], "item": events["item_id"],
                          ROW: np.arange(events.height), "time": events["ts"],
                          "weight": np.ones(events.height, np.float32)})
    result = update_log(load_parent(bundle), build_log(frame, IngestConfig(time="ts"), "new"),
                        progress=False)
    encoder = result.training.encoder
    assert bool(encoder.id_only)
    assert float(encoder.cold_offset) == pytest.approx(first.stats["coldstart"]["offset"])
    assert result.lineage["new_items_placed_from_features"] >= 10  # hidden items now warm
    assert np.isfinite(result.embeddings.vectors).all()
    assert result.embeddings.compact == (result.embeddings.n_warm < len(result.embeddings))


class _Tower:
    """Stands in for the fitted feature tower: every item's features give its category axis."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = torch.as_tensor(vectors, dtype=torch.float32)

    def feature_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.vectors[items]


def test_rare_warm_items_lean_on_features_when_validation_says_so():
    """Rare items with noisy behaviour vectors but telling features: a prior is chosen, rare
    items move most, popular ones barely; and with useless features none is chosen."""
    from itemvec.evaluation.protocol import Queries
    from itemvec.query.embeddings import ItemEmbeddings
    from itemvec.train.coldstart import choose_feature_prior

    rng = np.random.default_rng(0)
    n, n_cat, dim = 200, 10, 16
    category = np.arange(n) % n_cat
    axes = np.eye(dim)[:n_cat]
    counts = np.where(np.arange(n) < 100, 50, 1)  # items 0-99 popular, 100-199 seen once
    noise = rng.normal(size=(n, dim))
    vectors = np.where((counts > 1)[:, None], axes[category] + 0.1 * noise, noise)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    warm = ItemEmbeddings([f"i{i}" for i in range(n)], vectors.astype(np.float32),
                          temperature=0.2)
    histories, targets = [], []
    for q in range(400):
        k = q % n_cat
        popular = np.flatnonzero((category == k) & (counts > 1))
        rare = np.flatnonzero((category == k) & (counts == 1))
        histories.append(rng.choice(popular, 3, replace=False))
        targets.append(rng.choice(rare))
    queries = {"s2i": Queries(histories, np.asarray(targets))}
    share, report = choose_feature_prior(_Tower(axes[category]), warm, np.arange(n), queries,
                                         counts)
    assert report["prior"] > 0
    assert share[100:].min() > 0.3 and share[:100].max() < share[100:].min()
    good = axes[category] + 0.1 * noise  # behaviour already places the rare items well
    good /= np.linalg.norm(good, axis=1, keepdims=True)
    warm = ItemEmbeddings(warm.item_ids, good.astype(np.float32), temperature=0.2)
    useless = rng.normal(size=(n, dim))
    useless /= np.linalg.norm(useless, axis=1, keepdims=True)
    share, report = choose_feature_prior(_Tower(useless), warm, np.arange(n), queries, counts)
    assert report["prior"] == 0 and not share.any()


def test_encoder_blends_a_warm_item_by_its_feature_share():
    """The stored encoder gives what the exported vectors hold (``update``/``embed`` read it)."""
    from itemvec.model.encoder import FeatureEncoder

    torch.manual_seed(0)
    index = [np.array([[1], [2], [1], [2]])]  # 3 warm items + 1 cold, one categorical field
    encoder = FeatureEncoder(3, 8, 0, [3], index)
    encoder.id_only.fill_(True)
    encoder.eval()
    with torch.no_grad():
        plain = encoder(torch.arange(3))
        feature = encoder.feature_vectors(torch.arange(3))
        encoder.feature_share.copy_(torch.tensor([0.0, 0.5, 1.0]))
        mixed = encoder(torch.arange(3))
    torch.testing.assert_close(mixed[0], plain[0])
    expected = torch.nn.functional.normalize(0.5 * plain[1] + 0.5 * feature[1], dim=-1)
    torch.testing.assert_close(mixed[1], expected)
    torch.testing.assert_close(mixed[2], feature[2])


def test_cli_max_warm_drop_reaches_the_calibration(tmp_path, monkeypatch, capsys):
    """--max-warm-drop sets the warm budget of the cold calibration; a bad value is one line."""
    import sys

    from typer.testing import CliRunner

    from itemvec.cli.main import app, main
    from itemvec.data.synth import write

    shop = generate(6_000, 120, 6, seed=4)
    events, items = write(shop, tmp_path / "events.csv")
    base = ["train", str(events), "--context", "session_id", "--item", "item_id", "--time",
            "ts", "--items", str(items), "--epochs", "2", "--dim", "16", "-q"]
    result = CliRunner().invoke(app, [*base, "--max-warm-drop", "0.2", "--out",
                                      str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    stored = json.loads((tmp_path / "m" / SPEC_FILE).read_text())
    assert stored["config"]["max_warm_drop"] == 0.2
    monkeypatch.setattr(sys, "argv", ["itemvec", *base, "--max-warm-drop", "-1", "--out",
                                      str(tmp_path / "x")])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "side.max_warm_drop must be in [0, 1), got -1" in err
    assert len(err.strip().splitlines()) == 1


# -- similar over a whole catalogue: cold items must not crowd out behaviour evidence -----------
def cold_share(embeddings, items, cold: str) -> float:
    return float(np.mean([embeddings.similar_items(i, n=20, cold=cold).cold.mean()
                          for i in items]))


def test_similar_keeps_warm_neighbours_when_the_catalogue_is_mostly_cold(cold_catalogue):
    """Known answer (planted catalogue, tests/conftest.py): 20 cold items per warm one, each on
    a warm item's category. By plain cosine they take most of a warm item's top 20; with the
    calibrated default the neighbours stay the warm items of its hidden category."""
    model, _, categories = cold_catalogue
    emb = model.embeddings
    warm = emb.item_ids[:emb.n_warm][:60]
    assert len(emb) - emb.n_warm >= 20 * emb.n_warm * 0.95
    assert cold_share(emb, warm, "include") > 0.6  # the problem the calibration solves
    assert cold_share(emb, warm, "calibrated") < 0.1
    assert cold_share(emb, warm, "exclude") == 0.0
    same = [categories[j] == categories[i] for i in warm for j in emb.similar_items(i, n=10).ids]
    assert np.mean(same) >= 0.8


def test_similar_offset_is_chosen_on_validation_and_stored(cold_catalogue):
    model, bundle, _ = cold_catalogue
    report = model.stats["coldstart"]["similar_calibration"]
    assert report["method"] == "validation" and report["warm_queries"] >= 200
    assert report["warm_hr@20"] >= (1 - report["max_warm_drop"]) * report[
        "warm_hr@20_without_cold"] - 1e-9
    offset = model.stats["coldstart"]["similar_offset"]
    assert model.embeddings.query.cold_similarity_offset == offset
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["query"]["cold_similarity_offset"] == offset
    loaded = load_embeddings(bundle)
    assert loaded.n_warm == model.embeddings.n_warm
    item = loaded.item_ids[0]
    for cold in ("calibrated", "include"):
        got, want = loaded.similar_items(item, n=20, cold=cold), \
            model.embeddings.similar_items(item, n=20, cold=cold)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.cold, [not i.startswith("i") for i in got.ids])
