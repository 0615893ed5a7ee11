"""The streaming counter must give exactly count_pairs' matrix, vocabulary and item counts."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from itemvec.config import CooccurrenceConfig, IngestConfig
from itemvec.counting.cooccurrence import count_pairs, prune_rare_items
from itemvec.counting.streamed import (
    _Chunk,
    chunk_pairs,
    count_file,
    parse_size,
    top_k_partners,
)
from itemvec.data.ingest import read_events, restrict_vocabulary
from itemvec.data.synth import generate, write_streamed
from itemvec.store.bundle import load_cooccurrence
from itemvec.store.counts import write_counts
from itemvec.util.errors import ConfigError, DataError

DATA = Path(__file__).parents[2].parent / "shared" / "data"
DIGINETICA = DATA / "diginetica" / "sample_train-item-views.csv"
GROCERIES = DATA / "groceries" / "groceries_transactions.csv"


def reference(path, ingest, config):
    log = read_events(path, ingest)
    log = restrict_vocabulary(log, prune_rare_items(log, config.min_count))
    return log, count_pairs(log, config)


def assert_same(path, ingest, config, **options):
    log, expected = reference(path, ingest, config)
    counts = count_file(path, ingest, config, progress=False, **options)
    assert list(counts.item_ids) == list(log.item_ids)
    assert np.array_equal(counts.item_counts, log.item_counts())
    assert counts.matrix.shape == expected.shape and counts.matrix.nnz == expected.nnz
    assert abs(counts.matrix - expected).max() <= 1e-6 * abs(expected).max()
    return counts


needs_data = pytest.mark.skipif(not DIGINETICA.is_file() or not GROCERIES.is_file(),
                                reason="../shared/data is absent")


@needs_data
@pytest.mark.parametrize("ingest,config", [
    (IngestConfig(context="session_id", item="item_id", time="timeframe"), CooccurrenceConfig()),
    (IngestConfig(context="session_id", item="item_id", time="timeframe"),
     CooccurrenceConfig(min_count=3, time_decay_half_life=200_000, window=3)),
    (IngestConfig(context="session_id", item="item_id"),
     CooccurrenceConfig(distance_weighting="uniform")),
])
def test_sessions_equal_count_pairs_across_small_chunks(ingest, config):
    counts = assert_same(DIGINETICA, ingest, config, chunk_rows=997)
    assert counts.stats["mode"] == "grouped"  # the sample is grouped by session


@needs_data
def test_baskets_equal_count_pairs_grouped_and_partitioned():
    ingest = IngestConfig(context="basket_id", item="item")
    assert_same(GROCERIES, ingest, CooccurrenceConfig(), chunk_rows=4000)
    counts = assert_same(GROCERIES, ingest, CooccurrenceConfig(min_count=5), chunk_rows=4000,
                         grouped=False)
    assert counts.stats["mode"] == "partitioned"


@needs_data
def test_shuffled_log_falls_back_to_partitioning(tmp_path):
    shuffled = tmp_path / "shuffled.parquet"
    pl.read_csv(DIGINETICA, separator=";", infer_schema=False).sample(
        fraction=1.0, shuffle=True, seed=3).write_parquet(shuffled)
    ingest = IngestConfig(context="session_id", item="item_id", time="timeframe",
                          session_gap=100_000)
    counts = assert_same(shuffled, ingest, CooccurrenceConfig(), chunk_rows=2500)
    assert counts.stats["mode"] == "partitioned"
    with pytest.raises(DataError, match="not contiguous"):
        count_file(shuffled, ingest, chunk_rows=2500, grouped=True, progress=False)


def test_synthetic_parquet_with_event_weights_and_spills(tmp_path):
    shop = generate(n_events=30_000, n_items=300, n_categories=10, seed=1)
    path = tmp_path / "events.parquet"
    shop.events.write_parquet(path)
    ingest = IngestConfig(context="session_id", item="item_id", time="ts", event="event",
                          event_weights={"view": 1, "cart": 3, "purchase": 0})
    counts = assert_same(path, ingest, CooccurrenceConfig(), chunk_rows=3000,
                         memory_limit="256K")
    assert counts.stats["spilled_shards"] >= 1


def test_streamed_synth_is_grouped_and_counts_planted_pairs(tmp_path):
    path, items = write_streamed(tmp_path / "big.parquet", 40_000, 400, n_categories=8,
                                 chunk_events=7_000, progress=False)
    frame = pl.read_parquet(path)
    assert frame.columns[:3] == ["session_id", "user_id", "item_id"] and frame.height == 40_000
    ingest = IngestConfig(context="session_id", item="item_id", time="ts")
    counts = assert_same(path, ingest, CooccurrenceConfig(), chunk_rows=5_000)
    category = dict(pl.read_parquet(items).select("item_id", "category").iter_rows())
    coo = sp.triu(counts.matrix).tocoo()
    ids = counts.item_ids
    same = np.array([category[ids[i]] == category[ids[j]] for i, j in zip(coo.row, coo.col,
                                                                          strict=True)])
    assert coo.data[same].sum() > 0.6 * coo.data.sum()  # sessions mostly stay in a category


def test_top_k_keeps_strongest_partners():
    matrix = sp.csr_matrix(np.array([[0, 3, 1, 2], [3, 0, 0, 5], [1, 0, 0, 0], [2, 5, 0, 0]],
                                    dtype=np.float32))
    pruned = top_k_partners(matrix, 1).toarray()
    assert pruned.tolist() == [[0, 3, 0, 0], [0, 0, 0, 5], [1, 0, 0, 0], [0, 5, 0, 0]]


def test_write_and_read_round_trip(tmp_path):
    shop = generate(n_events=5_000, n_items=100, seed=2)
    path = tmp_path / "events.csv"
    shop.events.write_csv(path)
    ingest = IngestConfig(context="session_id", item="item_id", time="ts")
    counts = count_file(path, ingest, progress=False)
    out = write_counts(tmp_path / "cc", counts, engine="local", ingest=ingest,
                       config=CooccurrenceConfig())
    items = pl.read_parquet(out / "items.parquet")
    assert items.columns == ["item_id", "count"]
    assert items["item_id"].to_list() == list(counts.item_ids)
    assert items["count"].to_list() == counts.item_counts.tolist()
    assert (load_cooccurrence(out) != counts.matrix).nnz == 0


def test_bad_input_names_the_problem(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("s,i\n1,a\n1,\n")
    with pytest.raises(DataError, match="row 3: column 'i' is empty"):
        count_file(path, IngestConfig(context="s", item="i"), progress=False)
    with pytest.raises(DataError, match="column 'x' not found"):
        count_file(path, IngestConfig(context="x", item="i"), progress=False)
    assert parse_size("1.5G") == int(1.5 * 1024**3)
    with pytest.raises(ConfigError):
        parse_size("lots")


def brute_force_pairs(ctx, items, scale, window, harmonic):
    """Upper-triangle sums of count_pairs' loop, one pair at a time."""
    sums = {}
    for i in range(len(ctx)):
        for offset in range(1, window + 1):
            j = i + offset
            if j >= len(ctx) or ctx[j] != ctx[i]:
                break
            if items[i] != items[j]:
                key = (min(items[i], items[j]), max(items[i], items[j]))
                weight = scale[i] * scale[j] / (offset if harmonic else 1)
                sums[key] = sums.get(key, 0.0) + weight
    return sums


@pytest.mark.parametrize("unit", [True, False])  # packed offset keys / weights sorted alongside
@pytest.mark.parametrize("ordered", [True, False])
def test_chunk_pairs_match_brute_force(unit, ordered):
    rng = np.random.default_rng(4)
    ctx = np.sort(rng.integers(0, 300, 2_000))
    items = rng.integers(0, 40, len(ctx))
    scale = np.ones(len(ctx)) if unit else np.sqrt(rng.choice([0.5, 1.0, 3.0], len(ctx)))
    config = CooccurrenceConfig(window=3, basket_max_size=6)
    keys, weights = chunk_pairs(_Chunk(ctx, items, scale), ordered, config)
    assert np.all(np.diff(keys) > 0)  # sorted, unique
    window = 3 if ordered else 5
    expected = brute_force_pairs(ctx, items, scale, window, harmonic=ordered)
    got = {(int(k >> 32), int(k & 0xFFFFFFFF)): w for k, w in zip(keys, weights, strict=True)}
    assert got.keys() == expected.keys()
    assert all(abs(got[k] - expected[k]) < 1e-9 for k in expected)


def test_hash_collisions_fall_back_to_strings(tmp_path, monkeypatch, caplog):
    import logging

    import itemvec.counting.streamed as counting

    caplog.set_level(logging.INFO, logger="itemvec.counting.streamed")

    monkeypatch.setattr(counting, "_hash_items", lambda items: items.hash(seed=5) % 7)
    shop = generate(n_events=20_000, n_items=200, n_categories=8, seed=5)
    path = tmp_path / "events.parquet"
    shop.events.write_parquet(path)
    ingest = IngestConfig(context="session_id", item="item_id", time="ts")
    assert_same(path, ingest, CooccurrenceConfig(), chunk_rows=3_000)
    assert "hash collision" in caplog.text


def test_unit_weights_tiny_memory_limit_and_baskets_stay_equal(tmp_path):
    shop = generate(n_events=30_000, n_items=500, n_categories=10, seed=6)
    path = tmp_path / "events.parquet"
    shop.events.write_parquet(path, row_group_size=4_000)
    ingest = IngestConfig(context="session_id", item="item_id", time="ts")
    counts = assert_same(path, ingest, CooccurrenceConfig(), chunk_rows=2_500, memory_limit="64K")
    assert counts.stats["spilled_shards"] >= 2
    baskets = IngestConfig(context="session_id", item="item_id", context_kind="basket")
    assert_same(path, baskets, CooccurrenceConfig(basket_max_size=4), chunk_rows=2_500,
                memory_limit="64K")
    assert_same(path, baskets, CooccurrenceConfig(), chunk_rows=2_500, grouped=False)


def test_error_in_a_later_chunk_reaches_the_caller(tmp_path):
    frame = generate(n_events=10_000, n_items=100, seed=7).events
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 8_000).then(None)
                               .otherwise(pl.col("item_id")).alias("item_id"))
    path = tmp_path / "events.parquet"
    frame.write_parquet(path)
    with pytest.raises(DataError, match="row 8001: column 'item_id' is empty"):
        count_file(path, IngestConfig(context="session_id", item="item_id"), chunk_rows=1_000,
                   progress=False)


@pytest.mark.parametrize("grouped", [True, False])
def test_streamed_reads_refuse_weights_for_event_types_never_seen(tmp_path, grouped):
    """As the in-memory read does: a weight for a type the log never holds is a typo."""
    shop = generate(n_events=6_000, n_items=100, seed=3)
    path = tmp_path / "events.parquet"
    shop.events.write_parquet(path)
    ingest = IngestConfig(context="session_id", item="item_id", time="ts", event="event",
                          event_weights={"view": 1, "basket": 3})
    with pytest.raises(DataError, match=r"'basket'.*holds only: 'cart', 'purchase', 'view'"):
        count_file(path, ingest, chunk_rows=1000, grouped=grouped, progress=False)
