"""A co-occurrence directory (``itemvec cooccur``): the bundle's own matrix and items files.

``DIR/cooccurrence.npz`` + ``DIR/items.parquet`` (item_id, count) + ``DIR/manifest.json``,
written atomically like a bundle, so ``bundle.load_cooccurrence`` reads the matrix of either.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from itemvec.config import CooccurrenceConfig, IngestConfig
from itemvec.counting.streamed import Counts
from itemvec.store.bundle import MANIFEST, save_sparse
from itemvec.util.errors import DataError
from itemvec.util.files import dir_mode, sha256_file, swap_into_place
from itemvec.util.version import VERSION


def write_counts(out: str | Path, counts: Counts, *, engine: str, ingest: IngestConfig,
                 config: CooccurrenceConfig) -> Path:
    """Stage the three files next to ``out``, checksum them, then swap them into place."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / MANIFEST).exists())):
        raise DataError(f"--out {out} exists and is not a co-occurrence directory; "
                        "choose a new directory or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_sparse(staging / "cooccurrence.npz", counts.matrix)
        pl.DataFrame({"item_id": pl.Series([str(i) for i in counts.item_ids], dtype=pl.String),
                      "count": np.asarray(counts.item_counts, dtype=np.int64)}
                     ).write_parquet(staging / "items.parquet")
        files = ["cooccurrence.npz", "items.parquet"]
        manifest = {"kind": "itemvec-cooccurrence", "format_version": 1,
                    "itemvec_version": VERSION, "engine": engine,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "n_items": counts.n_items, "nonzeros": int(counts.matrix.nnz),
                    "config": {"ingest": ingest.to_dict(),
                               "cooccurrence": config.to_dict()},
                    "stats": counts.stats,
                    "files": {name: sha256_file(staging / name) for name in files}}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        os.chmod(staging, dir_mode())  # mkdtemp makes 0700: honour the umask
        swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
