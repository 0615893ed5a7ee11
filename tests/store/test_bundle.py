"""Model bundles: round trip, manifest, checksums, versioning, atomic replacement."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import itemvec.store.bundle as bundle
import itemvec.util.files as files
from itemvec.query.embeddings import ItemEmbeddings, load_embeddings
from itemvec.store.bundle import (
    FORMAT_VERSION,
    MANIFEST,
    PLAIN_FORMAT,
    load_cooccurrence,
    load_encoder_state,
    read_manifest,
    write_bundle,
)
from itemvec.util.errors import BundleError, ItemvecError


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the shared bundle that a test may damage."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "model"))


def small(seed: int = 0, n: int = 6) -> ItemEmbeddings:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 3)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ItemEmbeddings([f"i{k}" for k in range(n)], vectors, rng.normal(size=n), 0.2)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_round_trip_is_exact(trained, bundle_dir):
    loaded = load_embeddings(bundle_dir)
    original = trained.embeddings
    np.testing.assert_array_equal(loaded.item_ids, original.item_ids)
    np.testing.assert_array_equal(loaded.vectors, original.vectors)
    np.testing.assert_array_equal(loaded.item_bias, original.item_bias)
    assert loaded.temperature == original.temperature
    assert loaded.query == original.query
    ids, scores = loaded.similar_items(str(original.item_ids[3]), n=5)
    want_ids, want_scores = original.similar_items(str(original.item_ids[3]), n=5)
    assert ids.tolist() == want_ids.tolist()
    np.testing.assert_allclose(scores, want_scores)


def test_manifest_has_version_config_stats_and_checksums(trained, bundle_dir):
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert manifest["format_version"] == PLAIN_FORMAT  # compact bundles (cold items) are 2
    assert manifest["config"]["training"]["objective"] == "auto"
    assert manifest["config"]["ingest"]["time"] == "ts"
    assert manifest["stats"]["items"] == len(trained.embeddings)
    assert manifest["stats"]["events"] > 0
    assert manifest["n_items"] == len(trained.embeddings) and manifest["dim"] == 64
    assert {"embeddings.npy", "item_bias.npy", "items.parquet"} <= set(manifest["files"])
    assert all(len(digest) == 64 for digest in manifest["files"].values())


def test_optional_parts_round_trip(trained, bundle_dir):
    matrix = load_cooccurrence(bundle_dir)
    assert (matrix != trained.cooccurrence).nnz == 0
    state = load_encoder_state(bundle_dir)
    np.testing.assert_array_equal(state["item_bias"].numpy(),
                                  trained.training.encoder.state_dict()["item_bias"].numpy())
    items = pl.read_parquet(bundle_dir / "items.parquet")
    assert items["item_id"].dtype == pl.String
    assert items["count"].to_list() == trained.item_counts.tolist()


def test_corrupt_file_fails_the_checksum(bundle_copy):
    part = bundle_copy / "embeddings.npy"
    data = bytearray(part.read_bytes())
    data[-1] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="embeddings.npy: checksum mismatch"):
        load_embeddings(bundle_copy)


def test_truncated_or_missing_file(bundle_copy):
    part = bundle_copy / "items.parquet"
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(BundleError, match="items.parquet: checksum mismatch"):
        load_embeddings(bundle_copy)
    part.unlink()
    with pytest.raises(BundleError, match="missing file items.parquet"):
        load_embeddings(bundle_copy)


def test_newer_format_version_is_refused_clearly(bundle_copy):
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        load_embeddings(bundle_copy)
    message = str(info.value)
    assert f"format version {FORMAT_VERSION + 1}" in message and "upgrade itemvec" in message


def test_not_a_bundle(tmp_path, bundle_copy):
    with pytest.raises(BundleError, match="no such bundle directory"):
        load_embeddings(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="not an itemvec bundle"):
        load_embeddings(tmp_path / "empty")
    (bundle_copy / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="corrupt"):
        read_manifest(bundle_copy)


def test_loading_needs_no_torch_or_trainer(bundle_dir):
    code = ("import sys; from itemvec import ItemEmbeddings; "
            f"e = ItemEmbeddings.load({str(bundle_dir)!r}); e.similar_items(str(e.item_ids[0])); "
            "e.recommend([str(e.item_ids[1])]); "
            "bad = [m for m in ('torch', 'itemvec.train.trainer', 'itemvec.model.objectives') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_save_and_load_plain_embeddings(tmp_path):
    embeddings = small()
    embeddings.save(tmp_path / "plain")
    loaded = ItemEmbeddings.load(tmp_path / "plain")
    np.testing.assert_array_equal(loaded.vectors, embeddings.vectors)
    np.testing.assert_allclose(loaded.item_bias, embeddings.item_bias, rtol=1e-6)
    assert loaded.temperature == pytest.approx(0.2)


def test_item_table_columns_are_stored(tmp_path):
    embeddings = small()
    embeddings.item_table = pl.DataFrame({"item_id": ["i0", "i1"], "title": ["zero", "one"]})
    write_bundle(tmp_path / "m", embeddings, config={}, stats={})
    loaded = load_embeddings(tmp_path / "m")
    assert loaded.item_table["title"].to_list()[:3] == ["zero", "one", None]


def test_overwrite_replaces_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "m"
    write_bundle(out, small(0), config={}, stats={"n": 0})
    write_bundle(out, small(1), config={}, stats={"n": 1})
    np.testing.assert_array_equal(load_embeddings(out).vectors, small(1).vectors)
    assert leftovers(tmp_path) == []


def test_overwrite_without_renameat2(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    out = tmp_path / "m"
    write_bundle(out, small(0), config={}, stats={})
    write_bundle(out, small(1), config={}, stats={})
    np.testing.assert_array_equal(load_embeddings(out).vectors, small(1).vectors)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_keeps_the_previous_bundle(tmp_path, monkeypatch, failure):
    out = tmp_path / "m"
    write_bundle(out, small(0), config={}, stats={"run": "first"})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_write_parts = bundle._write_parts

    def write_half_then_fail(staging, *args, **kwargs):
        real_write_parts(staging, *args, **kwargs)  # some files are on disk ...
        raise failure  # ... when the write is cut short

    monkeypatch.setattr(bundle, "_write_parts", write_half_then_fail)
    with pytest.raises(type(failure)):
        write_bundle(out, small(1), config={}, stats={"run": "second"})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    np.testing.assert_array_equal(load_embeddings(out).vectors, small(0).vectors)
    assert leftovers(tmp_path) == []


def test_interrupted_first_write_leaves_no_bundle(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bundle, "sha256_file", fail)
    with pytest.raises(OSError):
        write_bundle(tmp_path / "m", small(), config={}, stats={})
    assert not (tmp_path / "m").exists()
    assert leftovers(tmp_path) == []


def test_refuses_to_overwrite_a_directory_that_is_not_a_bundle(tmp_path):
    other = tmp_path / "data"
    other.mkdir()
    (other / "precious.csv").write_text("keep me")
    with pytest.raises(ItemvecError, match="not an itemvec bundle"):
        write_bundle(other, small(), config={}, stats={})
    assert (other / "precious.csv").read_text() == "keep me"


def test_atomic_write_bytes_replaces_whole_files(tmp_path):
    target = tmp_path / "out.json"
    files.atomic_write_bytes(target, b"one")
    files.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert leftovers(tmp_path) == []


def test_sparse_parts_are_scipy_npz_files(tmp_path):
    """Written at a faster zlib level, still read by ``scipy.sparse.load_npz``, without pickle."""
    import scipy.sparse as sp

    from itemvec.store.bundle import save_sparse

    rng = np.random.default_rng(0)
    matrix = sp.random(300, 300, density=0.05, format="csr", random_state=1, dtype=np.float32)
    matrix.data = rng.random(matrix.nnz).astype(np.float32) * 7
    save_sparse(tmp_path / "m.npz", matrix)
    back = sp.load_npz(tmp_path / "m.npz")
    assert back.format == "csr" and back.dtype == np.float32 and back.shape == (300, 300)
    assert (back != matrix).nnz == 0
    with np.load(tmp_path / "m.npz", allow_pickle=False) as parts:
        assert sorted(parts.files) == ["data", "format", "indices", "indptr", "shape"]


# -- manifest schema, part shapes, permissions -----------------------------------------------------
def _edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    (path / MANIFEST).write_text(json.dumps(edit(manifest)))


@pytest.mark.parametrize("edit,message", [
    (lambda m: [m], "a JSON list, expected an object"),
    (lambda m: {k: v for k, v in m.items() if k != "files"}, "files = missing"),
    (lambda m: {**m, "format_version": True}, "format_version = True"),
    (lambda m: {**m, "format_version": -1}, "format_version = -1"),
    (lambda m: {**m, "n_items": "6"}, "n_items = '6'"),
    (lambda m: {**m, "files": {"embeddings.npy": m["files"]["embeddings.npy"]}},
     "no checksum for item_bias.npy, items.parquet"),
    (lambda m: {**m, "files": {**m["files"], "embeddings.npy": "abc"}}, "files.embeddings.npy"),
    (lambda m: {**m, "temperature": -1}, "temperature = -1"),
])
def test_malformed_manifest_is_refused_naming_the_field(tmp_path, edit, message):
    out = write_bundle(tmp_path / "model", small(), config={}, stats={})
    _edit_manifest(out, edit)
    with pytest.raises(BundleError, match=message):
        load_embeddings(out)


def test_a_part_of_the_wrong_shape_is_refused_even_with_a_matching_checksum(tmp_path):
    out = write_bundle(tmp_path / "model", small(n=6), config={}, stats={})
    np.save(out / "embeddings.npy", np.eye(5, 3, dtype=np.float32))  # 5 rows, manifest says 6
    _edit_manifest(out, lambda m: {**m, "files": {**m["files"], "embeddings.npy":
                                                  files.sha256_file(out / "embeddings.npy")}})
    with pytest.raises(BundleError, match=r"embeddings.npy: shape \(5, 3\) does not match the "
                                          r"manifest \(\(6, 3\)\)"):
        load_embeddings(out)


def test_manifests_of_earlier_versions_still_load(tmp_path):
    """Format 1 as first written: no lineage, no kind decision, query settings of that time."""
    out = write_bundle(tmp_path / "model", small(), config={}, stats={})
    _edit_manifest(out, lambda m: {k: m[k] for k in ("format_version", "itemvec_version",
                                                     "created", "n_items", "dim", "temperature",
                                                     "config", "stats", "files")})
    assert list(load_embeddings(out).item_ids) == [f"i{k}" for k in range(6)]


def test_bundles_and_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = write_bundle(tmp_path / "model", small(), config={}, stats={})
        files.atomic_write_bytes(tmp_path / "export.csv", b"x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o644}
    assert stat.S_IMODE((tmp_path / "export.csv").stat().st_mode) == 0o644
    old = os.umask(0o077)
    try:
        files.atomic_write_bytes(tmp_path / "private.csv", b"x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private.csv").stat().st_mode) == 0o600


def test_every_part_honours_the_umask_the_encoder_too(tmp_path):
    """safetensors writes its file 0600 whatever the umask: a service account reading the
    bundle could not verify (nor load) encoder.safetensors."""
    import scipy.sparse as sp
    import torch

    old = os.umask(0o022)
    try:
        out = write_bundle(tmp_path / "model", small(), config={}, stats={},
                           encoder_state={"item_bias": torch.zeros(6)},
                           cooccurrence=sp.identity(6, format="csr", dtype=np.float32))
    finally:
        os.umask(old)
    assert (out / "encoder.safetensors").is_file()
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        p.name: 0o644 for p in out.iterdir()}


def test_writes_into_a_bundle_are_refused(tmp_path, cli):
    out = write_bundle(tmp_path / "model", small(), config={}, stats={})
    before = (out / "items.parquet").read_bytes()
    code, _, err = cli(["export", out, "--out", out / "items.parquet"])
    assert code == 2 and err.count("\n") == 1 and "inside the model bundle" in err
    assert (out / "items.parquet").read_bytes() == before
    assert len(load_embeddings(out)) == 6
    code, _, err = cli(["export", out, "--out", tmp_path / "items.parquet"])
    assert code == 0, err


def test_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("itemvec.util.files.tempfile.mkstemp", denied)  # root ignores chmod 0555
    with pytest.raises(ItemvecError, match=r"--out .*model: cannot write in .* \(Permission "
                                           r"denied\); choose a writable directory"):
        bundle.check_target(tmp_path / "new" / "model")
    assert not (tmp_path / "new").exists()


def test_one_long_id_costs_its_own_bytes_not_items_times_its_length(tmp_path):
    """Fixed-width numpy strings would hold 3000 x 200,000 x 4 bytes = 2.4 GB here."""
    ids = [f"i{k}" for k in range(3000)]
    ids[7] = "L" * 200_000
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tracemalloc.start()
    try:
        out = write_bundle(tmp_path / "model", ItemEmbeddings(ids, vectors), config={}, stats={})
        loaded = load_embeddings(out)
        found, _ = loaded.similar_items_batch([ids[7], "i1"], n=3000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded.item_ids.dtype == object and found.dtype == object
    assert found.shape == (2, 3000) and ids[7] in set(found[1])
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB"
