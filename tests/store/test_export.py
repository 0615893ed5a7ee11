"""Exports other tools read back exactly: Parquet, JSONL, CSV, .npy + ids, word2vec text/binary."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from itemvec.store.export import FORMATS, export_format, export_vectors, ids_path
from itemvec.util.errors import ItemvecError

IDS = np.asarray(["a", "b-2", "ünï", "42"], dtype=object)
VECTORS = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)


@pytest.mark.parametrize(("name", "given", "expected"), [
    ("e.parquet", None, "parquet"), ("e.PQ", None, "parquet"), ("e.jsonl", None, "jsonl"),
    ("e.csv", None, "csv"), ("e.npy", None, "npy"), ("e.txt", "word2vec", "word2vec"),
    ("e.bin", "Word2Vec-Binary", "word2vec-binary"), ("e.parquet", "csv", "csv"),
])
def test_format_from_extension_or_option(name, given, expected, tmp_path):
    assert export_format(tmp_path / name, given) == expected


def test_unknown_extension_or_format_lists_the_choices(tmp_path):
    with pytest.raises(ItemvecError, match=r"e\.txt: unknown extension.*--format \(parquet, "
                       r"jsonl, csv, npy, word2vec, word2vec-binary\)"):
        export_format(tmp_path / "e.txt")
    with pytest.raises(ItemvecError, match="--format 'glove': unknown; use one of parquet"):
        export_format(tmp_path / "e.txt", "glove")


def test_table_formats_round_trip(tmp_path):
    export_vectors(tmp_path / "e.parquet", IDS, VECTORS, "parquet")
    frame = pl.read_parquet(tmp_path / "e.parquet")
    assert frame["item_id"].to_list() == IDS.tolist()
    np.testing.assert_array_equal(np.array(frame["embedding"].to_list(), np.float32), VECTORS)
    export_vectors(tmp_path / "e.jsonl", IDS, VECTORS, "jsonl")
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == IDS.tolist()
    export_vectors(tmp_path / "e.csv", IDS, VECTORS, "csv")
    frame = pl.read_csv(tmp_path / "e.csv", schema_overrides={"item_id": pl.String})
    assert frame.columns == ["item_id", "dim_0", "dim_1", "dim_2", "dim_3", "dim_4"]
    assert frame["item_id"].to_list() == IDS.tolist()  # "42" stays a string id
    np.testing.assert_allclose(frame.drop("item_id").to_numpy(), VECTORS, rtol=1e-6)


def test_npy_with_ids_beside_it(tmp_path):
    written = export_vectors(tmp_path / "emb.npy", IDS, VECTORS, "npy")
    assert written == [tmp_path / "emb.npy", tmp_path / "emb.ids.txt"] and \
        ids_path(tmp_path / "emb.npy") == tmp_path / "emb.ids.txt"
    np.testing.assert_array_equal(np.load(tmp_path / "emb.npy", allow_pickle=False), VECTORS)
    assert (tmp_path / "emb.ids.txt").read_text(encoding="utf-8").splitlines() == IDS.tolist()
    with pytest.raises(ItemvecError, match="line break"):
        export_vectors(tmp_path / "bad.npy", ["a\nb"], VECTORS[:1], "npy")


@pytest.mark.parametrize("fmt", ["word2vec", "word2vec-binary"])
def test_word2vec_reads_back_in_gensim(fmt, tmp_path):
    gensim_models = pytest.importorskip("gensim.models")
    out = tmp_path / "e.w2v"
    export_vectors(out, IDS, VECTORS, fmt)
    loaded = gensim_models.KeyedVectors.load_word2vec_format(str(out),
                                                             binary=fmt.endswith("binary"))
    assert list(loaded.index_to_key) == IDS.tolist()
    np.testing.assert_allclose(loaded.vectors, VECTORS, rtol=1e-6)


def test_word2vec_header_and_lines_without_gensim(tmp_path):
    export_vectors(tmp_path / "e.txt", IDS, VECTORS, "word2vec")
    lines = (tmp_path / "e.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "4 5" and len(lines) == 5
    assert lines[3].split(" ")[0] == "ünï"
    np.testing.assert_allclose([float(x) for x in lines[1].split(" ")[1:]], VECTORS[0])


@pytest.mark.parametrize("bad", ["two words", "tab\there", ""])
def test_word2vec_refuses_ids_it_cannot_hold(bad, tmp_path):
    with pytest.raises(ItemvecError, match=r"1 item id\(s\) contain whitespace or are empty"):
        export_vectors(tmp_path / "e.txt", ["ok", bad], VECTORS[:2], "word2vec-binary")
    assert not (tmp_path / "e.txt").exists()
    assert len(FORMATS) == 6
