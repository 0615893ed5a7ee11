"""Memory-mappable bundle parts: written once per checksum, mapped read-only, equal to the
bundle's own, and answering lookups like the in-memory ids."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
import scipy.sparse as sp

from itemvec.query.embeddings import ItemEmbeddings
from itemvec.store.bundle import load_cooccurrence, write_bundle
from itemvec.store.mapped import mapped_cooccurrence, mapped_item_ids
from itemvec.util.errors import BundleError, UnknownItemError


def _mapped(array) -> bool:
    """Whether ``array``'s memory comes from a memory-mapped file (its chain of bases)."""
    while array is not None:
        if isinstance(array, np.memmap | mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


@pytest.fixture()
def bundle(tmp_path):
    rng = np.random.default_rng(3)
    ids = ["30", "7", "-2", "100", "5"]
    vectors = rng.normal(size=(5, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    counts = sp.csr_matrix(np.array([[0, 2, 0, 0, 1], [2, 0, 3, 0, 0], [0, 3, 0, 0, 0],
                                     [0, 0, 0, 0, 4], [1, 0, 0, 4, 0]], dtype=np.float32))
    emb = ItemEmbeddings(ids, vectors, rng.normal(size=5), 0.5)
    return write_bundle(tmp_path / "b", emb, config={}, stats={}, cooccurrence=counts)


def test_ids_are_mapped_sorted_and_written_once(bundle, tmp_path):
    ids, ordered, rows = mapped_item_ids(bundle, tmp_path / "cache")
    assert ids.tolist() == ["30", "7", "-2", "100", "5"]
    assert ordered.tolist() == ["-2", "100", "30", "5", "7"]
    assert rows.tolist() == [2, 3, 0, 4, 1]
    assert _mapped(ids) and _mapped(rows) and not ids.flags.writeable
    folder = next((tmp_path / "cache").glob("items-*"))
    written = (folder / "ids.npy").stat().st_mtime_ns
    mapped_item_ids(bundle, tmp_path / "cache")
    assert (folder / "ids.npy").stat().st_mtime_ns == written


def test_cooccurrence_parts_equal_the_bundle_matrix(bundle, tmp_path):
    mapped = mapped_cooccurrence(bundle, tmp_path / "cache")
    assert all(_mapped(getattr(mapped, part)) for part in ("data", "indices", "indptr"))
    assert np.array_equal(mapped.toarray(), load_cooccurrence(bundle).toarray())
    (bundle / "cooccurrence.npz").unlink()  # read from the cache from now on
    assert mapped_cooccurrence(bundle, tmp_path / "cache")[1, 2] == 3


def test_embeddings_on_mapped_ids_answer_as_the_in_memory_ones(bundle, tmp_path):
    mapped = ItemEmbeddings.load(bundle, mmap=True, mapped_cache=tmp_path / "cache")
    plain = ItemEmbeddings.load(bundle)
    assert mapped.integer_ids and plain.integer_ids
    for item in ("30", 7, "-2", "5"):
        assert mapped.row(item) == plain.row(item)
        got, want = mapped.similar_items(item, n=3), plain.similar_items(item, n=3)
        assert got[0].tolist() == want[0].tolist() and np.allclose(got[1], want[1])
    assert "8" not in mapped and "100" in mapped and len(mapped.index) == 5
    with pytest.raises(UnknownItemError):
        mapped.row("99")
    result = mapped.recommend(["7", "nope", "30"], n=2)
    assert result.skipped == 1 and result[0].tolist() == plain.recommend(["7", "30"], n=2)[0].tolist()


def test_batched_lookups_on_mapped_ids_match_one_at_a_time(bundle, tmp_path):
    """A batch of histories is looked up in one binary search: the same rows and skipped
    counts as one id at a time, unknown ids (shorter, longer than any id, empty) skipped."""
    mapped = ItemEmbeddings.load(bundle, mmap=True, mapped_cache=tmp_path / "cache")
    plain = ItemEmbeddings.load(bundle)
    histories = [["7", "nope", "30"], [], ["5", "1000000", "-2", ""], ["x" * 50]]
    rows, skipped = mapped.known_many(histories)
    assert [r.tolist() for r in rows] == [[1, 0], [], [4, 2], []]
    assert skipped.tolist() == [1, 0, 2, 1]
    want_rows, want_skipped = plain.known_many(histories)
    assert [r.tolist() for r in want_rows] == [r.tolist() for r in rows]
    assert want_skipped.tolist() == skipped.tolist()
    assert mapped.index.rows_of(["100", "x" * 50, "10"]).tolist() == [3, -1, -1]
    assert mapped.index.get("x" * 50) is None  # longer than every id: not searched
    batch = mapped.recommend_batch(histories, n=2)
    assert batch.skipped.tolist() == [1, 0, 2, 1]
    assert batch[0][0].tolist() == plain.recommend(["7", "30"], n=2)[0].tolist()


def test_a_bundle_without_a_matrix_says_so(tmp_path):
    emb = ItemEmbeddings(["a", "b"], np.eye(2, dtype=np.float32))
    path = write_bundle(tmp_path / "plain", emb, config={}, stats={})
    with pytest.raises(BundleError, match="no co-occurrence"):
        mapped_cooccurrence(path, tmp_path / "cache")


def test_long_ids_are_not_shared_at_fixed_width(tmp_path):
    """A fixed-width array costs items x the longest id: one long id keeps the ids per process
    (object strings) and the embeddings still answer."""
    ids = ["a", "b", "L" * 1000]
    emb = ItemEmbeddings(ids, np.eye(3, dtype=np.float32))
    path = write_bundle(tmp_path / "b", emb, config={}, stats={})
    assert mapped_item_ids(path, tmp_path / "cache") is None
    assert not list((tmp_path / "cache").glob("items-*"))
    loaded = ItemEmbeddings.load(path, mmap=True, mapped_cache=tmp_path / "cache")
    assert loaded.item_ids.dtype == object and loaded.row("L" * 1000) == 2
