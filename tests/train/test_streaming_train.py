"""Streaming ``itemvec train`` must pick, count and validate exactly as the in-memory path."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from itemvec.config import CooccurrenceConfig, IngestConfig, PipelineConfig, TrainingConfig
from itemvec.counting.cooccurrence import count_pairs, prune_rare_items
from itemvec.counting.streamed import count_file
from itemvec.data.ingest import read_events, restrict_vocabulary
from itemvec.data.streaming import hold_out, read_contexts, sample_valid, use_streaming
from itemvec.data.synth import generate
from itemvec.train.pipeline import holdout_by_time, train
from itemvec.util.errors import ConfigError

CHUNK = 2_500  # many chunks, so contexts straddle chunk boundaries


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    """A small shop whose log also has repeats (a repeat ending a session moves its end time)
    and zero-weight events, the cases where the last event time needs ingest's own rules."""
    frame = generate(n_events=12_000, n_items=250, n_categories=8, seed=4).events
    repeats = frame.gather_every(7).with_columns(pl.col("ts") + 1.0)  # same item, 1 s later
    lonely = frame.head(2).with_columns(session_id=pl.lit("s_lonely"),  # items seen only here
                                        item_id=pl.Series(["lonely1", "lonely2"]))
    return pl.concat([frame, repeats, lonely]).sort("session_id", "ts", maintain_order=True)


@pytest.fixture(scope="module")
def files(events, tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("streaming")
    grouped = folder / "events.parquet"
    events.write_parquet(grouped)
    csv = folder / "events.csv"
    events.write_csv(csv)
    shuffled = folder / "shuffled.parquet"  # not grouped by session: hash partitions
    events.sample(fraction=1.0, shuffle=True, seed=1).write_parquet(shuffled)
    return {"parquet": grouped, "csv": csv, "shuffled": shuffled}


INGESTS = {
    "sessions": IngestConfig(time="ts"),
    "session-gap": IngestConfig(time="ts", session_gap=90),
    "zero-weights": IngestConfig(time="ts", event="event",
                                 event_weights={"view": 1, "cart": 3, "purchase": 0}),
    "baskets-with-time": IngestConfig(time="ts", context_kind="basket"),
    "no-clock": IngestConfig(),
}


def same_contexts(streamed, expected) -> None:
    assert streamed.context_ids.tolist() == expected.context_ids.tolist()
    for c in range(expected.n_contexts):
        assert streamed.item_ids[streamed.context(c)].tolist() == \
            expected.item_ids[expected.context(c)].tolist()


@pytest.mark.parametrize("name", list(INGESTS))
@pytest.mark.parametrize("kind", ["parquet", "shuffled"])
def test_holdout_pass_picks_what_holdout_by_time_picks(files, name, kind):
    ingest = INGESTS[name]
    log = read_events(files[kind], ingest)
    _, expected = holdout_by_time(log, 0.15, seed=3)
    holdout = hold_out(files[kind], ingest, 0.15, seed=3, chunk_rows=CHUNK, progress=False)
    assert holdout.grouped == (kind == "parquet")
    assert holdout.n_contexts == log.n_contexts
    assert holdout.by_time == (ingest.time is not None)
    valid = read_contexts(files[kind], ingest, holdout.valid, chunk_rows=CHUNK, progress=False)
    same_contexts(valid, expected)
    if name == "session-gap":  # split contexts are held out per session part
        assert any("#" in label for label in holdout.valid["label"])


@pytest.mark.parametrize("name", ["sessions", "session-gap", "baskets-with-time"])
@pytest.mark.parametrize("config", [CooccurrenceConfig(),
                                    CooccurrenceConfig(min_count=4, window=3,
                                                       time_decay_half_life="10d")])
def test_count_file_without_excluded_contexts_equals_count_pairs_on_the_rest(files, name,
                                                                            config):
    ingest = INGESTS[name]
    log = read_events(files["parquet"], ingest)
    left_out = np.random.default_rng(0).choice(log.n_contexts, log.n_contexts // 3,
                                               replace=False)
    lonely = [c for c, label in enumerate(log.context_ids) if label.startswith("s_lonely")]
    left_out = np.union1d(left_out, lonely)
    rest = log.subset(np.setdiff1d(np.arange(log.n_contexts), left_out))
    rest = restrict_vocabulary(rest, prune_rare_items(rest, config.min_count))
    expected = count_pairs(rest, config)
    counts = count_file(files["parquet"], ingest, config, chunk_rows=CHUNK, progress=False,
                        exclude=log.context_ids[left_out])
    assert counts.item_ids.tolist() == rest.item_ids.tolist()  # whole-log order, rare dropped
    assert "lonely1" in log.item_ids and "lonely1" not in rest.item_ids
    assert np.array_equal(counts.item_counts, rest.item_counts())
    assert counts.matrix.nnz == expected.nnz
    assert abs(counts.matrix - expected).max() <= 1e-6 * abs(expected).max()
    assert counts.stats["excluded_contexts"] == len(left_out)
    assert counts.stats["events"] == rest.n_events


def test_exclusion_survives_hash_collisions(files, monkeypatch):
    from itemvec.counting import streamed as counting

    ingest = INGESTS["sessions"]
    log = read_events(files["parquet"], ingest)
    left_out = log.context_ids[::4]
    expected = count_file(files["parquet"], ingest, chunk_rows=CHUNK, progress=False,
                          exclude=left_out)
    # every id hashes alike: hits must be confirmed by the strings
    monkeypatch.setattr(pl.Series, "hash", lambda self, seed=0: pl.Series(np.zeros(len(self),
                                                                                    np.uint64)))
    exclusion = counting.Exclusion(left_out)
    flags = exclusion.contains(pl.Series(log.context_ids[:8].astype(str)))
    assert flags.tolist() == [True, False, False, False, True, False, False, False]
    assert counts_equal(expected, count_file(files["parquet"], ingest, chunk_rows=CHUNK,
                                             progress=False, exclude=left_out))


def counts_equal(a, b) -> bool:
    return a.item_ids.tolist() == b.item_ids.tolist() and (a.matrix != b.matrix).nnz == 0


def small_config(**ingest) -> PipelineConfig:
    return PipelineConfig(ingest=IngestConfig(time="ts", **ingest),
                          training=TrainingConfig(epochs=3, dim=16, device="cpu", eval_every=1,
                                                  validation_fraction=0.15,
                                                  history_epochs=0))  # streaming has no log


@pytest.mark.parametrize("kind,ingest", [("parquet", {}), ("csv", {"session_gap": 90})])
def test_streamed_training_equals_in_memory_training(files, kind, ingest, tmp_path):
    config = small_config(**ingest)
    expected = train(files[kind], config.with_values({"streaming.mode": "off"}), progress=False)
    model = train(files[kind], config.with_values({"streaming.mode": "on"}),
                  out=tmp_path / "model", progress=False)
    assert model.embeddings.item_ids.tolist() == expected.embeddings.item_ids.tolist()
    assert (model.cooccurrence != expected.cooccurrence).nnz == 0
    assert np.array_equal(model.item_counts, expected.item_counts)
    np.testing.assert_allclose(model.embeddings.vectors, expected.embeddings.vectors, atol=1e-6)
    stats = model.stats
    for key in ("events", "contexts", "items", "cooccurrence_nonzeros", "context_kind",
                "best_epoch", "validation_hr@20", "query_tuning"):
        assert stats[key] == expected.stats[key], key
    assert stats["streaming"]["holdout_contexts"] == stats["streaming"]["validation_contexts_read"]
    assert "streaming" not in expected.stats
    streamed, whole = stats["context_kind_decision"], expected.stats["context_kind_decision"]
    assert streamed["kind"] == whole["kind"] and streamed["chosen_by"] == "data"
    assert streamed["evidence"]["rows_read"] >= stats["events"]  # a small file: every row
    from itemvec.query.embeddings import load_embeddings

    assert load_embeddings(tmp_path / "model").metadata["stats"]["events"] == stats["events"]


def test_validation_sample_is_seeded_and_bounded(files):
    holdout = hold_out(files["parquet"], INGESTS["sessions"], 0.3, seed=0, chunk_rows=CHUNK,
                       progress=False)
    sample = sample_valid(holdout, limit=50, seed=1)
    assert sample.height == 50 and sample.equals(sample_valid(holdout, limit=50, seed=1))
    assert set(sample["label"]) <= set(holdout.valid["label"])
    assert sample["label"].to_list() == [x for x in holdout.valid["label"] if x in
                                         set(sample["label"])]  # log order kept
    log = read_contexts(files["parquet"], INGESTS["sessions"], sample, chunk_rows=CHUNK,
                        progress=False)
    assert log.context_ids.tolist() == sample["label"].to_list()


def test_min_support_is_refused_when_streaming(files):
    config = small_config().with_values({"cooccurrence.min_support": 2, "streaming.mode": "on"})
    with pytest.raises(ConfigError, match="--streaming off"):
        train(files["parquet"], config, progress=False)


def test_auto_streams_big_parquet_and_csv_but_never_jsonl(files, tmp_path):
    rows = pl.read_parquet(files['parquet']).height
    assert use_streaming(files["parquet"], "auto", threshold=1000)
    assert not use_streaming(files["parquet"], "auto", threshold=rows)  # at most: in memory
    assert use_streaming(files["csv"], "auto", threshold=1000)
    assert not use_streaming(files["csv"], "auto")  # far below 20M rows
    assert not use_streaming(files["parquet"], "off", threshold=1000)
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text('{"session_id": "a", "item_id": "x"}\n')
    assert not use_streaming(jsonl, "auto", threshold=0)
    with pytest.raises(ConfigError, match="JSONL"):
        use_streaming(jsonl, "on")
    with pytest.raises(ConfigError, match="auto, on, off"):
        use_streaming(files["parquet"], "sometimes")


def test_cli_train_streams(files, tmp_path, cli):
    code, out, err = cli(["train", files["parquet"], "--out", tmp_path / "m", "--time", "ts",
                          "--epochs", "1", "--dim", "8", "--device", "cpu", "--streaming", "on",
                          "--memory-limit", "64M", "--quiet"])
    assert code == 0, err
    assert "trained" in out
    code, _, err = cli(["train", files["parquet"], "--out", tmp_path / "m2", "--min-support", "2",
                        "--streaming", "on", "--quiet"])
    assert code == 2 and "--streaming off" in err
