"""Compact cold storage (bundle format 2): distinct cold vectors plus a row index answer every
query exactly as every item's own vector would; format-1 bundles load as before."""

from __future__ import annotations

import errno
import json
import os
import stat

import numpy as np
import pytest
from typer.testing import CliRunner

import itemvec.util.files as files
from itemvec.cli.main import app
from itemvec.config import QueryConfig
from itemvec.query.embeddings import ItemEmbeddings, load_embeddings
from itemvec.store.bundle import (
    MANIFEST,
    PLAIN_FORMAT,
    ROWS_FILE,
    read_manifest,
    reusable,
    write_bundle,
)
from itemvec.store.compact import append_cold, compact_cold, unique_rows
from itemvec.util.errors import BundleError
from itemvec.util.files import sha256_file

N_WARM, N_COLD, DISTINCT, DIM = 60, 900, 25, 8


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def models():
    """(expanded, compact): the same catalogue, cold rows drawn from DISTINCT vectors."""
    rng = np.random.default_rng(3)
    warm = _unit(rng.normal(size=(N_WARM, DIM)))
    distinct = _unit(rng.normal(size=(DISTINCT, DIM)))
    group = rng.integers(0, DISTINCT, N_COLD)
    vectors = np.concatenate([warm, distinct[group]])
    bias = np.concatenate([rng.normal(size=N_WARM), rng.normal(size=DISTINCT)[group]])
    ids = [f"w{i}" for i in range(N_WARM)] + [f"c{i}" for i in range(N_COLD)]
    query = QueryConfig(cold_similarity_offset=-0.1)
    meta = {"stats": {"cold_items": N_COLD}}
    expanded = ItemEmbeddings(ids, vectors, bias, 0.5, query, meta, n_warm=N_WARM)
    stored, rows = compact_cold(vectors, N_WARM)
    compact = ItemEmbeddings(ids, stored, bias, 0.5, query, meta, n_warm=N_WARM,
                             vector_rows=rows)
    return expanded, compact


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(a.cold, b.cold)


def _answers_match(expanded: ItemEmbeddings, other: ItemEmbeddings) -> None:
    items = ["w0", "w7", "c3", "c500"]
    for cold in ("calibrated", "include", "exclude"):
        _same(expanded.similar_items_batch(items, n=15, cold=cold),
              other.similar_items_batch(items, n=15, cold=cold))
    histories = [["w1", "c2", "w3"], ["c10"], [], ["w5", "w9"]]
    _same(expanded.recommend_batch(histories, n=25), other.recommend_batch(histories, n=25))
    _same(expanded.recommend(["w2", "c4"], n=5, filter_seen=False, exclude=["w8"]),
          other.recommend(["w2", "c4"], n=5, filter_seen=False, exclude=["w8"]))
    _same(expanded.most_similar(["w1", "c5"], ["w2"], n=10),
          other.most_similar(["w1", "c5"], ["w2"], n=10))
    _same(expanded.similar_to_vector(expanded["c9"], n=10), other.similar_to_vector(
        other["c9"], n=10))
    np.testing.assert_array_equal(expanded["c777"], other["c777"])
    np.testing.assert_allclose(expanded.score_histories([np.array([0, 70])]),
                               other.score_histories([np.array([0, 70])]), atol=1e-6)


def test_unique_rows_numbers_groups_by_first_occurrence():
    matrix = np.array([[3, 1], [0, 0], [3, 1], [2, 2], [0, 0]])
    first, inverse = unique_rows(matrix)
    assert first.tolist() == [0, 1, 3] and inverse.tolist() == [0, 1, 0, 2, 1]
    np.testing.assert_array_equal(matrix[first][inverse], matrix)


def test_compact_cold_and_append_keep_every_row(models):
    expanded, compact = models
    assert compact.compact and len(compact.stored_vectors) == N_WARM + DISTINCT
    np.testing.assert_array_equal(compact.vectors, expanded.vectors)
    new = np.concatenate([compact.stored_vectors[N_WARM + 4:N_WARM + 6],  # two known vectors
                          _unit(np.ones((2, DIM)))])  # one new vector, twice
    stored, rows = append_cold(compact.stored_vectors, N_WARM, new)
    assert len(stored) == N_WARM + DISTINCT + 1
    assert rows.tolist() == [N_WARM + 4, N_WARM + 5, N_WARM + DISTINCT, N_WARM + DISTINCT]
    np.testing.assert_array_equal(stored[rows], new)


def test_compact_answers_equal_the_expanded_ones(models):
    expanded, compact = models
    _answers_match(expanded, compact)


def test_compact_bundle_round_trip_answers_equal(models, tmp_path):
    expanded, compact = models
    compact.save(tmp_path / "compact")
    expanded.save(tmp_path / "expanded")
    manifest = read_manifest(tmp_path / "compact")
    assert manifest["format_version"] == 2 and ROWS_FILE in manifest["files"]
    assert manifest["stored_vectors"] == N_WARM + DISTINCT and manifest["n_items"] == len(compact)
    plain = read_manifest(tmp_path / "expanded")
    assert plain["format_version"] == PLAIN_FORMAT and ROWS_FILE not in plain["files"]
    size = (tmp_path / "compact" / "embeddings.npy").stat().st_size
    assert size < (tmp_path / "expanded" / "embeddings.npy").stat().st_size / 10
    loaded = load_embeddings(tmp_path / "compact")
    assert loaded.compact and loaded.n_warm == N_WARM
    _answers_match(expanded, loaded)
    mapped = load_embeddings(tmp_path / "compact", mmap=True, mapped_cache=tmp_path / "cache")
    assert isinstance(mapped.stored_vectors, np.memmap) or mapped.stored_vectors.base is not None
    _answers_match(expanded, mapped)
    _answers_match(expanded, load_embeddings(tmp_path / "expanded"))  # format 1 as before


def test_index_backend_on_a_compact_model(models, tmp_path):
    expanded, compact = models
    compact.save(tmp_path / "b")
    loaded = load_embeddings(tmp_path / "b").use_index("exact")  # indexes every item's row
    plain = ItemEmbeddings(expanded.item_ids, expanded.vectors, expanded.item_bias,
                           query=expanded.query, n_warm=N_WARM).use_index("exact")
    _same(plain.similar_items_batch(["w3", "c8"], n=12),
          loaded.similar_items_batch(["w3", "c8"], n=12))


def test_export_writes_every_items_vector(models, tmp_path):
    expanded, compact = models
    compact.save(tmp_path / "b")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "b"), "--out",
                                      str(tmp_path / "e.npy")])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), expanded.vectors)


def _rewrite(bundle, name, array) -> None:
    """Replace a part and record its new checksum, as a part from elsewhere would be."""
    np.save(bundle / name, array, allow_pickle=False)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"][name] = sha256_file(bundle / name)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def test_a_row_index_outside_the_stored_vectors_is_refused(models, tmp_path):
    _, compact = models
    compact.save(tmp_path / "b")
    rows = np.load(tmp_path / "b" / ROWS_FILE)
    rows[-1] = N_WARM + DISTINCT  # one past the end
    _rewrite(tmp_path / "b", ROWS_FILE, rows)
    with pytest.raises(BundleError, match="vector_rows.npy: holds rows outside the 85 stored"):
        load_embeddings(tmp_path / "b")
    _rewrite(tmp_path / "b", ROWS_FILE, rows[:-1])
    with pytest.raises(BundleError, match=r"vector_rows.npy: shape \(959,\) does not match"):
        load_embeddings(tmp_path / "b")


def test_expanded_vectors_may_be_replaced(models):
    _, compact = models
    clone = ItemEmbeddings(compact.item_ids, compact.stored_vectors, compact.item_bias,
                           vector_rows=compact.vector_rows, n_warm=N_WARM)
    full = clone.vectors.copy()
    clone.vectors = full[::-1].copy()  # e.g. fine-tuning setting every vector
    assert not clone.compact
    np.testing.assert_array_equal(clone["w0"], full[-1])
    with pytest.raises(ValueError, match="vector_rows index outside"):
        ItemEmbeddings(compact.item_ids, compact.stored_vectors[:3],
                       vector_rows=compact.vector_rows)


def test_a_compact_manifest_must_say_how_many_vectors_it_stores(models, tmp_path):
    _, compact = models
    compact.save(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    del manifest["stored_vectors"]
    (tmp_path / "b" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="corrupt: stored_vectors = None .*vector_rows.npy"):
        load_embeddings(tmp_path / "b")


def test_link_or_copy_copies_across_file_systems(tmp_path, monkeypatch):
    source = tmp_path / "part.npy"
    source.write_bytes(b"stored once")
    assert files.link_or_copy(source, tmp_path / "linked.npy")
    assert os.stat(tmp_path / "linked.npy").st_ino == os.stat(source).st_ino

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(files.os, "link", cross_device)
    assert not files.link_or_copy(source, tmp_path / "copied.npy")
    assert (tmp_path / "copied.npy").read_bytes() == b"stored once"
    assert os.stat(tmp_path / "copied.npy").st_ino != os.stat(source).st_ino


def test_a_linked_part_gets_the_mode_the_umask_gives(models, tmp_path):
    """A part linked from an older bundle written under another umask would keep that bundle's
    mode (a link shares the inode): a private 0600 bundle's encoder unreadable to the service
    reading the new one, or a world-readable part in a bundle written under umask 077."""
    _, compact = models
    for written, linked in ((0o077, 0o022), (0o022, 0o077)):
        old, new = tmp_path / f"old-{written:o}", tmp_path / f"new-{linked:o}"
        previous = os.umask(written)
        try:
            compact.save(old)
        finally:
            os.umask(previous)
        previous = os.umask(linked)
        try:
            write_bundle(new, compact, config={}, stats={"cold_items": N_COLD},
                         reuse=reusable(old, read_manifest(old), "embeddings.npy"))
        finally:
            os.umask(previous)
        want = 0o666 & ~linked
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in new.iterdir()} == {
            p.name: want for p in new.iterdir()}
        assert stat.S_IMODE((old / "embeddings.npy").stat().st_mode) == 0o666 & ~written
        load_embeddings(new)  # the carried checksum still holds


def test_vector_rows_must_be_one_integer_row_per_item():
    """A list is an index like any other; float, bool or 2-D rows are refused when the model
    is made, not by the first query (a bool array would silently mask instead of index)."""
    vectors = np.eye(4, dtype=np.float32)
    emb = ItemEmbeddings(["a", "b", "c", "d", "e"], vectors, vector_rows=[0, 1, 2, 3, 3])
    assert emb.compact and emb.similar_items("d", n=1).ids.tolist() == ["e"]
    for rows in (np.array([0, 1, 2, 3, 3.0]), np.array([True, True, False, True, True]),
                 np.array([[0], [1], [2], [3], [3]])):
        with pytest.raises(ValueError, match="vector_rows"):
            ItemEmbeddings(["a", "b", "c", "d", "e"], vectors, vector_rows=rows)


def test_concurrent_first_reads_expand_once(models, monkeypatch):
    """Requests racing to the first ``vectors`` of a compact model must not each build (and
    hold, a million rows x dim each) their own expansion."""
    import threading
    import time

    import itemvec.query.embeddings as embeddings_module

    _, compact = models
    fresh = ItemEmbeddings(compact.item_ids, compact.stored_vectors, compact.item_bias,
                           n_warm=N_WARM, vector_rows=compact.vector_rows)
    expansions = []

    class SlowLog:  # widens the window between the check and the assignment
        def info(self, *args):
            expansions.append(args)
            time.sleep(0.05)

    monkeypatch.setattr(embeddings_module, "logger", SlowLog())
    got, start = [], threading.Barrier(4)

    def read():
        start.wait()
        got.append(fresh.vectors)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(expansions) == 1 and all(v is got[0] for v in got)


def test_workers_share_one_mapped_expansion_of_a_compact_bundle(models, tmp_path):
    """``serve --workers`` maps the bundle so that every worker shares one copy of the vectors.
    An index backend (``--index auto`` by default) reads every item's row: for a format-1
    bundle that is the mapped ``embeddings.npy``, and a compact one must not instead have
    each worker build its own private expansion."""
    import mmap

    expanded, compact = models
    compact.save(tmp_path / "b")
    plain = ItemEmbeddings(expanded.item_ids, expanded.vectors, expanded.item_bias, 0.5,
                           expanded.query, n_warm=N_WARM).use_index("exact")  # same tie order
    workers = [load_embeddings(tmp_path / "b", mmap=True, mapped_cache=tmp_path / "cache")
               .use_index("exact") for _ in range(2)]
    for emb in workers:
        base, mapped = emb.vectors, False
        while base is not None and not mapped:
            mapped = isinstance(base, np.memmap | mmap.mmap)
            base = getattr(base, "base", None)
        assert mapped, "each worker holds a private expansion"
        np.testing.assert_array_equal(emb.vectors, expanded.vectors)
        _answers_match(plain, emb)
    assert len(list((tmp_path / "cache").glob("vectors-*/vectors.npy"))) == 1


def test_a_stored_index_goes_stale_when_the_row_index_changes(models, tmp_path, caplog):
    """A stored index is over every item's row: for a compact bundle that is embeddings.npy
    *and* vector_rows.npy. Two bundles may share embeddings.npy (embed links it) while their
    items point at other rows; an index built for one must not be taken as fresh for the
    other."""
    pytest.importorskip("faiss")
    import shutil

    from itemvec.query.index import save_index

    _, compact = models
    compact.save(tmp_path / "a")
    built = load_embeddings(tmp_path / "a").use_index("hnsw")
    save_index(built.vector_index, tmp_path / "a")
    with caplog.at_level("INFO", logger="itemvec.query.index"):
        load_embeddings(tmp_path / "a").use_index("hnsw", bundle=tmp_path / "a")
    assert "loaded stored hnsw index" in caplog.text  # its own bundle's index is fresh
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    rows = np.load(tmp_path / "b" / ROWS_FILE)
    rows[N_WARM:] = rows[N_WARM:][::-1].copy()  # cold items point at other stored vectors
    _rewrite(tmp_path / "b", ROWS_FILE, rows)
    b = load_embeddings(tmp_path / "b")
    exact = ItemEmbeddings(b.item_ids, b.vectors, b.item_bias, n_warm=N_WARM)
    served = load_embeddings(tmp_path / "b").use_index("hnsw", bundle=tmp_path / "b")
    for item in ("w0", "c1", "c400"):
        ids, scores = served.similar_items(item, n=5, cold="include")
        true = [float(exact[i] @ exact[item]) for i in ids]  # each answer's real cosine
        np.testing.assert_allclose(scores, true, atol=1e-5)
        np.testing.assert_allclose(scores, exact.similar_items(item, n=5, cold="include")
                                   .scores, atol=1e-5)
