"""Several inputs as one log: paths, globs, directories, partitioned Parquet, .gz and .zst."""

from __future__ import annotations

import gzip

import polars as pl
import pytest

from itemvec.config import IngestConfig
from itemvec.data.ingest import read_events
from itemvec.data.sources import expand_paths
from itemvec.util.errors import DataError

A = "order,sku\n1,x\n1,y\n2,x\n"
B = "order,sku\n3,y\n3,z\n"
CONFIG = IngestConfig(context="order", item="sku")
EXPECTED = {"1": ["x", "y"], "2": ["x"], "3": ["y", "z"]}


def contexts(log) -> dict[str, list[str]]:
    return {str(log.context_ids[c]): [str(log.item_ids[i]) for i in log.context(c)]
            for c in range(log.n_contexts)}


@pytest.fixture
def two_files(tmp_path):
    (tmp_path / "part-a.csv").write_text(A)
    (tmp_path / "part-b.csv").write_text(B)
    return tmp_path


def test_several_paths_form_one_log(two_files):
    log = read_events([two_files / "part-a.csv", two_files / "part-b.csv"], CONFIG)
    assert contexts(log) == EXPECTED
    assert "part-a.csv" in log.source and "part-b.csv" in log.source


def test_a_glob_and_a_directory_read_every_file(two_files):
    assert contexts(read_events(str(two_files / "part-*.csv"), CONFIG)) == EXPECTED
    (two_files / "_SUCCESS").write_text("")  # export markers are not data
    assert contexts(read_events(two_files, CONFIG)) == EXPECTED


def test_a_context_split_over_two_files_is_one_context(tmp_path):
    (tmp_path / "a.csv").write_text("order,sku\n1,x\n")
    (tmp_path / "b.csv").write_text("order,sku\n1,y\n")
    assert contexts(read_events([tmp_path / "a.csv", tmp_path / "b.csv"], CONFIG)) == {
        "1": ["x", "y"]}


def test_a_glob_without_matches_names_the_pattern(tmp_path):
    with pytest.raises(DataError, match=r"nope-\*\.csv: no files match"):
        read_events(str(tmp_path / "nope-*.csv"), CONFIG)


def test_errors_name_the_file_and_row_of_the_bad_input(two_files):
    (two_files / "part-c.csv").write_text("order,sku\n4,w\n4,\n")
    with pytest.raises(DataError, match=r"part-c\.csv: row 3: column 'sku' is empty"):
        read_events(str(two_files / "part-*.csv"), CONFIG)


@pytest.mark.parametrize("name", ["e.csv.gz", "e.tsv.gz", "e.jsonl.gz"])
def test_gzip_on_any_text_format(tmp_path, name):
    text = {"e.csv.gz": A, "e.tsv.gz": A.replace(",", "\t"),
            "e.jsonl.gz": '{"order": 1, "sku": "x"}\n{"order": 1, "sku": "y"}\n'
                          '{"order": 2, "sku": "x"}\n'}[name]
    (tmp_path / name).write_bytes(gzip.compress(text.encode()))
    assert contexts(read_events(tmp_path / name, CONFIG)) == {"1": ["x", "y"], "2": ["x"]}


def test_zstd_csv_and_parquet(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "e.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(A.encode()))
    assert contexts(read_events(tmp_path / "e.csv.zst", CONFIG)) == {"1": ["x", "y"], "2": ["x"]}
    pl.read_csv(B.encode()).write_parquet(tmp_path / "p.parquet")
    raw = (tmp_path / "p.parquet").read_bytes()
    (tmp_path / "p.parquet.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    assert contexts(read_events(tmp_path / "p.parquet.zst", CONFIG)) == {"3": ["y", "z"]}


def test_partitioned_parquet_directory_keeps_partition_columns(tmp_path):
    root = tmp_path / "events"
    for day, text in (("2024-01-01", A), ("2024-01-02", B)):
        (root / f"day={day}").mkdir(parents=True)
        pl.read_csv(text.encode(), schema_overrides={"order": pl.String}).write_parquet(
            root / f"day={day}" / "part-0.parquet")
    log = read_events(root, IngestConfig(context="order", item="sku", time="day"))
    assert contexts(log) == EXPECTED
    assert sorted(set(log.times)) == [1704067200.0, 1704153600.0]  # the day= partitions
    assert expand_paths(root) == [root]  # one source, read by polars with hive partitioning
