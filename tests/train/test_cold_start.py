"""Cold items: hidden from events, embedded from features alone, first-class in the bundle."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from itemvec.cli.main import app
from itemvec.config import IngestConfig, PipelineConfig
from itemvec.data.ingest import ROW, build_log
from itemvec.data.synth import generate, write_table
from itemvec.model.features import SideInformation
from itemvec.query.embeddings import load_embeddings
from itemvec.train.pipeline import train_on_log

N_ITEMS, N_CATEGORIES = 300, 10


@pytest.fixture(scope="module")
def shop_with_hidden():
    shop = generate(20_000, N_ITEMS, N_CATEGORIES, seed=1)
    hidden = set(np.random.default_rng(0).choice(shop.items["item_id"].to_numpy(), 30,
                                                 replace=False).tolist())
    events = shop.events.filter(~pl.col("item_id").is_in(list(hidden)))
    return shop, hidden, events


def config() -> PipelineConfig:
    c = PipelineConfig(ingest=IngestConfig(time="ts"))
    c.training.device, c.training.epochs, c.training.dim = "cpu", 12, 32
    return c


def test_cold_items_land_in_their_own_category(shop_with_hidden):
    shop, hidden, events = shop_with_hidden
    table = pl.DataFrame({"context": events["session_id"], "item": events["item_id"],
                          ROW: np.arange(events.height), "time": events["ts"],
                          "weight": np.ones(events.height, np.float32)})
    log = build_log(table, IngestConfig(time="ts"), "synth")
    items = shop.items.select("item_id", "category", "brand", "price")  # no title
    model = train_on_log(log, config(), item_table=items, side=SideInformation(items),
                         progress=False)
    emb = model.embeddings
    assert model.stats["cold_items"] == len(hidden)
    assert set(emb.item_ids[-len(hidden):]) == hidden  # appended after the warm items
    category = dict(zip(shop.items["item_id"], shop.items["category"], strict=True))
    share = []
    for item in hidden:
        ids, _ = emb.similar_items(item, n=10, exclude=hidden)
        share.append(np.mean([category[i] == category[item] for i in ids]))
    assert np.mean(share) > 0.8  # chance: 1 / N_CATEGORIES
    assert np.isfinite(emb.item_bias).all()


def test_cli_train_export_similar_and_embed(shop_with_hidden, tmp_path):
    shop, hidden, events = shop_with_hidden
    events_path, items_path = tmp_path / "events.csv", tmp_path / "items.csv"
    write_table(events, events_path)
    held = shop.items.filter(pl.col("item_id").is_in(list(hidden)))
    later = sorted(hidden)[:5]
    write_table(shop.items.filter(~pl.col("item_id").is_in(later)), items_path)
    runner = CliRunner()
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", str(events_path), "--time", "ts", "--items",
                                 str(items_path), "--features", "category:cat,brand,price:num",
                                 "--epochs", "6", "--dim", "32", "--device", "cpu", "--quiet",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    emb = load_embeddings(out)
    assert len(emb) == N_ITEMS - 5 and (out / "features.json").is_file()
    cold = sorted(hidden - set(later))[0]
    result = runner.invoke(app, ["similar", str(out), cold, "--json"])
    assert result.exit_code == 0 and len(json.loads(result.output)["items"]) == 10
    new_path = tmp_path / "new.csv"
    write_table(held.filter(pl.col("item_id").is_in(later)), new_path)
    result = runner.invoke(app, ["embed", str(out), "--items", str(new_path), "--out",
                                 str(tmp_path / "model2")])
    assert result.exit_code == 0, result.output
    grown = load_embeddings(tmp_path / "model2")
    assert len(grown) == N_ITEMS and set(later) <= set(grown.item_ids)
    np.testing.assert_allclose(grown.vectors[:len(emb)], emb.vectors)  # nothing else moved
    category = dict(zip(shop.items["item_id"], shop.items["category"], strict=True))
    ids, _ = grown.similar_items(later[0], n=10)
    assert np.mean([category[i] == category[later[0]] for i in ids]) > 0.5
    export = tmp_path / "all.parquet"
    assert runner.invoke(app, ["export", str(tmp_path / "model2"), "--out",
                               str(export)]).exit_code == 0
    assert pl.read_parquet(export).height == N_ITEMS
    plain = tmp_path / "plain"
    result = runner.invoke(app, ["train", str(events_path), "--time", "ts", "--epochs", "2",
                                 "--device", "cpu", "--quiet", "--out", str(plain)])
    assert result.exit_code == 0
    result = runner.invoke(app, ["embed", str(plain), "--items", str(new_path)])
    assert result.exit_code != 0 and "without item features" in str(result.exception or
                                                                     result.output)
