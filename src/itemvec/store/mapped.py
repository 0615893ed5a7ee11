"""A bundle's co-occurrence matrix as memory-mapped CSR parts, shared by serving processes.

``cooccurrence.npz`` is a zip archive (compressed), which cannot be memory-mapped. The first
process to ask writes its three CSR arrays as plain ``.npy`` files under a cache directory, in
a folder named by the matrix's checksum (so a new bundle gets new files), with a file lock so
concurrent workers write it once; every process then maps them read-only. The bundle itself is
never written, so it may sit on read-only storage.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from itemvec.store.bundle import load_cooccurrence, read_manifest
from itemvec.util.errors import BundleError
from itemvec.util.files import fsync_tree

logger = logging.getLogger(__name__)

PARTS = ("data", "indices", "indptr")
MATRIX = "cooccurrence.npz"


def mapped_cooccurrence(bundle: str | Path, cache: str | Path) -> sp.csr_matrix:
    """The bundle's co-occurrence matrix with its arrays memory-mapped from ``cache``."""
    bundle, cache = Path(bundle), Path(cache)
    digest = read_manifest(bundle).get("files", {}).get(MATRIX)
    if digest is None:
        raise BundleError(f"{bundle.name}: bundle has no co-occurrence matrix")
    folder = cache / f"cooccurrence-{digest[:24]}"
    if not (folder / "shape.npy").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / "shape.npy").is_file():
                _write_parts(load_cooccurrence(bundle), folder)
    arrays = [np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
              for name in PARTS]
    shape = tuple(int(x) for x in np.load(folder / "shape.npy", allow_pickle=False))
    return sp.csr_matrix(tuple(arrays), shape=shape, copy=False)


def _write_parts(matrix: sp.csr_matrix, folder: Path) -> None:
    """The CSR arrays as ``.npy`` files, written aside and renamed into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        for name in PARTS:
            np.save(staging / f"{name}.npy", getattr(matrix, name), allow_pickle=False)
        np.save(staging / "shape.npy", np.asarray(matrix.shape, dtype=np.int64))
        fsync_tree(staging)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote memory-mappable co-occurrence parts (%d non-zeros) to %s", matrix.nnz,
                folder)
