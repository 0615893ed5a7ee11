"""Bundle parts in memory-mappable form, shared by serving processes: the co-occurrence
matrix, the item ids and a compact bundle's expanded vectors.

``cooccurrence.npz`` is a zip archive (compressed) and ``items.parquet`` holds the ids as
Arrow strings; neither can be memory-mapped, and a million ids as Python strings plus their
lookup dict take ~140 MiB in every process. The first process to ask writes plain ``.npy``
files under a cache directory, in a folder named by the part's checksum (so a new bundle gets
new files), under a file lock so concurrent workers write them once; every process then maps
them read-only. The ids become fixed-width unicode arrays (the longest id sets the width):
in row order, and sorted with their rows for lookups by binary search. A fixed width costs
items x the longest id, so ids longer than ``MAX_SHARED_ID_CHARS`` are not shared: each
process keeps its own Python strings (their own bytes each). A compact bundle (format 2)
stores distinct vectors plus a row index; an index backend reads every item's row, so the
expansion is written here once (named by both parts' checksums) and mapped by every worker,
as a format-1 bundle's ``embeddings.npy`` is. The bundle itself is never written, so it may
sit on read-only storage.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from itemvec.store.bundle import ROWS_FILE, load_cooccurrence, read_manifest
from itemvec.util.errors import BundleError
from itemvec.util.files import fsync_tree

logger = logging.getLogger(__name__)

PARTS = ("data", "indices", "indptr")
MATRIX = "cooccurrence.npz"
ITEMS = "items.parquet"
MAX_SHARED_ID_CHARS = 64  # 1M ids of 64 characters: 256 MB per fixed-width array


def mapped_cooccurrence(bundle: str | Path, cache: str | Path) -> sp.csr_matrix:
    """The bundle's co-occurrence matrix with its arrays memory-mapped from ``cache``."""
    bundle, cache = Path(bundle), Path(cache)
    digest = read_manifest(bundle).get("files", {}).get(MATRIX)
    if digest is None:
        raise BundleError(f"{bundle.name}: bundle has no co-occurrence matrix")
    folder = cache / f"cooccurrence-{digest[:24]}"
    _write_once(folder, "shape.npy", lambda: _write_parts(load_cooccurrence(bundle), folder))
    arrays = [np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
              for name in PARTS]
    shape = tuple(int(x) for x in np.load(folder / "shape.npy", allow_pickle=False))
    return sp.csr_matrix(tuple(arrays), shape=shape, copy=False)


def mapped_item_ids(bundle: str | Path, cache: str | Path
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(ids, sorted_ids, rows)``: the bundle's item ids in row order, sorted, and the row of
    each sorted id; fixed-width unicode arrays memory-mapped read-only from ``cache``. None
    when an id is longer than ``MAX_SHARED_ID_CHARS`` (the caller reads the ids itself)."""
    bundle, cache = Path(bundle), Path(cache)
    digest = read_manifest(bundle).get("files", {}).get(ITEMS)
    if digest is None:
        raise BundleError(f"{bundle.name}: bundle lists no {ITEMS}")
    folder = cache / f"items-{digest[:24]}"
    if not _write_once(folder, "rows.npy", lambda: _write_ids(bundle, folder)):
        return None
    return tuple(np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                 for name in ("ids", "sorted", "rows"))


def mapped_expansion(cache: str | Path, manifest: dict, stored: np.ndarray, rows: np.ndarray
                     ) -> np.ndarray:
    """Every item's vector, ``stored[rows]``, memory-mapped read-only from ``cache``: written
    once per (``embeddings.npy``, ``vector_rows.npy``) checksum pair of ``manifest`` (the one
    the arrays were read with, not the bundle's current one, which a reload may have
    replaced)."""
    files = manifest.get("files", {})
    key = hashlib.sha256(f"{files['embeddings.npy']}:{files[ROWS_FILE]}".encode()).hexdigest()
    folder = Path(cache) / f"vectors-{key[:24]}"
    _write_once(folder, "vectors.npy",
                lambda: _write_arrays({"vectors": np.asarray(stored)[np.asarray(rows)]}, folder))
    return np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False)


def _write_once(folder: Path, marker: str, write: Callable[[], bool | None]) -> bool:
    """Run ``write`` unless ``folder/marker`` exists, under a lock so that concurrent workers
    write once; False when ``write`` declined (returned False)."""
    if (folder / marker).is_file():
        return True
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / marker).is_file():
            return write() is not False
    return True


def _write_ids(bundle: Path, folder: Path) -> bool:
    """The ids in row order, sorted, and the sorted ids' rows; False (nothing written) when
    one is longer than ``MAX_SHARED_ID_CHARS``."""
    ids = pl.read_parquet(bundle / ITEMS, columns=["item_id"])["item_id"]
    if (ids.str.len_chars().max() or 0) > MAX_SHARED_ID_CHARS:
        return False
    ids = np.asarray(ids.to_numpy(), dtype=str)
    rows = np.argsort(ids, kind="stable")
    _write_arrays({"ids": ids, "sorted": ids[rows], "rows": rows}, folder)
    return True


def _write_parts(matrix: sp.csr_matrix, folder: Path) -> None:
    _write_arrays({**{name: getattr(matrix, name) for name in PARTS},
                   "shape": np.asarray(matrix.shape, dtype=np.int64)}, folder)


def _write_arrays(arrays: dict[str, np.ndarray], folder: Path) -> None:
    """Arrays as ``NAME.npy`` files, written aside and renamed into place as one folder."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array, allow_pickle=False)
        fsync_tree(staging)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote memory-mappable %s to %s", ", ".join(arrays), folder)
