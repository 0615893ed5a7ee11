"""The pipeline stages wired together: train with an item table, validation slice, evaluation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from itemvec.config import (
    CooccurrenceConfig,
    FeatureConfig,
    IngestConfig,
    PipelineConfig,
    TrainingConfig,
)
from itemvec.data.ingest import read_events
from itemvec.evaluation.protocol import hit_rate
from itemvec.query.embeddings import ItemEmbeddings, load_embeddings
from itemvec.train.pipeline import (
    evaluate_log,
    holdout_by_time,
    make_validator,
    query_settings,
    read_item_table,
    train,
    train_on_log,
    validation_queries,
    vocabulary_map,
)
from itemvec.util.errors import DataError


def test_train_writes_a_bundle_with_the_item_table(shop_files, tmp_path, shop):
    events, items = shop_files
    config = PipelineConfig(ingest=IngestConfig(time="ts"), side=FeatureConfig(items=str(items)),
                            training=TrainingConfig(epochs=2, device="cpu", dim=16))
    model = train(events, config, out=tmp_path / "model", progress=False)
    loaded = load_embeddings(tmp_path / "model")
    assert loaded.item_ids.tolist() == model.embeddings.item_ids.tolist()
    table = loaded.item_table
    assert {"item_id", "count", "category", "title"} <= set(table.columns)
    want = dict(zip(shop.items["item_id"], shop.items["category"], strict=True))
    got = dict(zip(table["item_id"], table["category"], strict=True))
    assert all(want[item] == category for item, category in got.items())
    assert loaded.metadata["stats"]["epochs_run"] <= 2


def test_holdout_by_time_takes_the_newest_contexts(shop_log):
    train_log, valid = holdout_by_time(shop_log, 0.1, seed=0)
    assert valid is not None
    assert train_log.n_contexts + valid.n_contexts == shop_log.n_contexts
    assert valid.n_contexts == round(0.1 * shop_log.n_contexts)
    assert train_log.context_end_times().max() <= valid.context_end_times().min()
    small = shop_log.subset(np.arange(10))
    assert holdout_by_time(small, 0.1, seed=0) == (small, None)  # too few contexts to hold out


class _Encoder:
    """What a validator reads from a model under training: vectors and popularity bias."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.vectors, self.bias = rng.normal(size=(n, 8)), rng.normal(size=n)

    def export(self):
        return self.vectors, self.bias


@pytest.mark.parametrize("task", ["s2i", "i2i", "mean"])
def test_the_validator_scores_the_configured_task(shop_log, task):
    train_log, valid = holdout_by_time(shop_log, 0.2, seed=0)
    items = train_log.item_ids
    config = PipelineConfig(training=TrainingConfig(validation_task=task))
    encoder = _Encoder(len(items))
    queries = validation_queries(valid, items, config)
    scorer = ItemEmbeddings(items, encoder.vectors, encoder.bias, config.training.temperature,
                            query_settings(config, valid.ordered))
    hits = {t: hit_rate(scorer, q) for t, q in queries.items()}
    want = (hits["s2i"] + hits["i2i"]) / 2 if task == "mean" else hits[task]
    assert make_validator(valid, items, config)(encoder) == pytest.approx(want)
    assert abs(hits["s2i"] - hits["i2i"]) > 1e-3  # the tasks differ: the test can tell them apart


def test_vocabulary_map(shop_log):
    model_items = np.array(["i3", "nope", str(shop_log.item_ids[0])], dtype=object)
    mapping = vocabulary_map(shop_log, model_items)
    assert mapping[0] == 2
    position = shop_log.item_ids.tolist().index("i3")
    assert mapping[position] == 0
    assert (mapping == -1).sum() == shop_log.n_items - 2


def test_min_count_prunes_the_vocabulary(shop_log, shop_config):
    config = shop_config.replace(cooccurrence=CooccurrenceConfig(min_count=50),
                     training=shop_config.training.replace(epochs=1, dim=8))
    model = train_on_log(shop_log, config, progress=False)
    assert model.item_counts.min() >= 50
    assert len(model.embeddings) < shop_log.n_items
    assert model.cooccurrence.shape == (len(model.embeddings),) * 2


def test_nothing_to_learn_is_a_data_error(write_file, shop_config):
    singletons = read_events(write_file("e.csv", "session_id,item_id\n1,a\n2,b\n3,c\n"),
                             IngestConfig())
    with pytest.raises(DataError, match="no two items ever share a context"):
        train_on_log(singletons, shop_config, progress=False)
    pair = read_events(write_file("f.csv", "session_id,item_id\n1,a\n1,b\n"), IngestConfig())
    config = shop_config.replace(cooccurrence=CooccurrenceConfig(min_count=2))
    with pytest.raises(DataError, match="fewer than 2 items left after --min-count 2"):
        train_on_log(pair, config, progress=False)


def test_item_table_errors_name_the_file(write_file):
    path = write_file("items.csv", "sku,title\na,x\n,y\n")
    with pytest.raises(DataError, match="column 'item_id' .* not found; columns present: sku"):
        read_item_table(path, "item_id")
    with pytest.raises(DataError, match=r"items.csv: row 3: column 'sku' is empty"):
        read_item_table(path, "sku")
    table = read_item_table(write_file("dupes.csv", "sku,title\na,first\na,second\n"), "sku")
    assert table.to_dicts() == [{"item_id": "a", "title": "first"}]


def test_evaluate_log_beats_popularity_on_planted_data(shop_log, shop_config):
    config = shop_config.replace(training=shop_config.training.replace(epochs=4))
    result = evaluate_log(shop_log, config, ["popularity", "itemknn"], max_queries=1000,
                          progress=False)
    assert result["split"]["by_time"]
    assert sum(result["split"][k] for k in ("train", "valid", "test")) == shop_log.n_contexts
    for task in ("i2i", "s2i"):
        methods = result["results"][task]
        assert set(methods) == {"itemvec", "popularity", "itemknn"}
        assert methods["itemvec"]["queries"] == 1000
        assert methods["itemvec"]["HR@20"] > methods["popularity"]["HR@20"] + 0.1, methods
        for metrics in methods.values():
            assert 0 <= metrics["MRR@20"] <= metrics["NDCG@20"] <= metrics["HR@20"] <= 1


def test_item_ids_stay_strings_through_the_pipeline(tmp_path, shop_config):
    frame = pl.DataFrame({"session_id": [1, 1, 2, 2, 3, 3], "item_id": [7, 8, 7, 8, 7, 9]})
    frame.write_parquet(tmp_path / "e.parquet")
    log = read_events(tmp_path / "e.parquet", IngestConfig())
    config = shop_config.replace(ingest=IngestConfig(),
                     training=shop_config.training.replace(epochs=1, dim=4))
    model = train_on_log(log, config, progress=False)
    assert model.embeddings.item_ids.tolist() == ["7", "8", "9"]
    ids, _ = model.embeddings.similar_items("7", n=5)
    assert sorted(ids.tolist()) == ["8", "9"]
