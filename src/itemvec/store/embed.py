"""Embed new items into a trained bundle from their features alone (``itemvec embed``).

The bundle's feature spec and encoder weights featurise the new rows exactly as in training;
the extended bundle is written atomically like any other.

Incremental: the result is a compact bundle (``store.compact``). Only the new items' vectors
are computed; a new vector equal to a stored cold one (same feature row) reuses its row, so
``embeddings.npy`` grows by the distinct new vectors only (a vector no item uses any more,
after its items were embedded again, is dropped) and is hard-linked from the old bundle when
nothing changed. The encoder weights and feature spec never change and are
hard-linked too (copied across file systems), their checksums carried over. What is rewritten
grows with the catalogue only by a few bytes per item: the ids (``items.parquet``), logits,
row index and co-occurrence row pointers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from itemvec.model.features import SPEC_FILE, load_feature_encoder
from itemvec.store.bundle import (
    StoredVectors,
    load_cooccurrence,
    load_encoder_state,
    read_vectors,
    reusable,
    write_bundle,
)
from itemvec.store.compact import append_cold, compact_cold, drop_unused
from itemvec.util.errors import BundleError

logger = logging.getLogger(__name__)

ENCODER = "encoder.safetensors"


def embed_into_bundle(bundle: str | Path, table: pl.DataFrame,
                      out: str | Path | None = None) -> tuple[Path, dict[str, int]]:
    """Embed the items of ``table`` from their features into a trained bundle, no retraining.

    Items the model learned from behaviour keep their vectors; items already embedded cold are
    embedded again; new ones are appended. Written atomically to ``out`` (default: in place).
    """
    bundle = Path(bundle)
    if not (bundle / SPEC_FILE).is_file():
        raise BundleError(f"{bundle}: model was trained without item features (no {SPEC_FILE});"
                          " retrain with --items to embed new items")
    current = read_vectors(bundle)
    files = {SPEC_FILE: (bundle / SPEC_FILE).read_bytes()}
    state = load_encoder_state(bundle)
    spec, encoder = load_feature_encoder(files, state)
    n_warm = encoder.n_items
    warm = set(current.item_ids[:n_warm].tolist())
    incoming = table.filter(~pl.col("item_id").is_in(list(warm)))
    vectors, bias = encoder.embed_features([spec.transform(incoming)[n] for n in spec.names])
    new_ids = incoming["item_id"].to_numpy().astype(object)
    keep = _kept(current, set(new_ids.tolist()), n_warm)
    merged, grew, rewritten = _merged(current, keep, incoming, new_ids, vectors, bias, n_warm)
    n = len(merged.item_ids)
    matrix = _padded_cooccurrence(bundle, n_warm, n)
    names = [ENCODER, SPEC_FILE] + ([] if rewritten else ["embeddings.npy"])
    reuse = reusable(bundle, current.manifest, *names)
    stats = {**current.manifest.get("stats", {}), "cold_items": n - n_warm}
    target = Path(out) if out is not None else bundle
    write_bundle(target, merged, config=current.manifest.get("config", {}), stats=stats,
                 encoder_state=None if ENCODER in reuse else state,
                 cooccurrence=matrix, item_counts=_counts(current, keep, len(new_ids)),
                 extra_files=files, reuse=reuse)
    logger.info("embed: %d new rows, %d new stored vectors; linked %s", len(new_ids), grew,
                ", ".join(sorted(reuse)) or "nothing")
    report = {"embedded": len(new_ids), "replaced": int((~keep).sum()),
              "skipped_warm": table.height - incoming.height, "items": n,
              "new_vectors": grew, "linked": len(reuse)}
    return target, report


def _kept(current: StoredVectors, arriving: set, n_warm: int) -> np.ndarray:
    """Bool per current item: kept (warm, or cold and not embedded again)."""
    # np.isin on object ids is quadratic: minutes at 1M items
    keep = np.fromiter((item not in arriving for item in current.item_ids.tolist()), dtype=bool,
                       count=len(current.item_ids))
    keep[:n_warm] = True
    return keep


def _merged(current: StoredVectors, keep: np.ndarray, incoming: pl.DataFrame,
            new_ids: np.ndarray, vectors: np.ndarray, bias: np.ndarray, n_warm: int
            ) -> tuple[StoredVectors, int, bool]:
    """The kept items then the new ones, compact; how many stored vectors were added; and
    whether the stored vectors differ from the bundle's ``embeddings.npy`` (else it is linked).
    Vectors no item uses any more (items embedded again) are dropped."""
    if current.vector_rows is None:  # a format-1 bundle: compacted once here
        stored, rows = compact_cold(np.asarray(current.vectors, dtype=np.float32), n_warm)
        before = -1  # every part is new
    else:
        stored, rows = np.asarray(current.vectors), np.asarray(current.vector_rows)
        before = len(stored)
    stored, new_rows = append_cold(stored, n_warm, vectors)
    grew = len(stored) - before if before >= 0 else len(stored)
    stored, item_rows, dropped = drop_unused(stored, np.concatenate([rows[keep], new_rows]),
                                             n_warm)
    if dropped:
        logger.info("embed: dropped %d stored vectors no item uses any more", dropped)
    old_table = current.item_table if current.item_table is not None else pl.DataFrame(
        {"item_id": [str(i) for i in current.item_ids]})
    item_table = pl.concat([old_table.filter(pl.Series(keep)).drop("count", strict=False),
                            incoming], how="diagonal_relaxed")
    merged = StoredVectors(np.concatenate([current.item_ids[keep], new_ids]), stored,
                           np.concatenate([current.item_bias[keep], bias]).astype(np.float32),
                           current.temperature, current.query, item_table, current.manifest,
                           item_rows)
    return merged, grew, before < 0 or grew > 0 or dropped > 0


def _counts(current: StoredVectors, keep: np.ndarray, n_new: int) -> np.ndarray:
    table = current.item_table
    counts = (table["count"].to_numpy() if table is not None and "count" in table.columns
              else np.zeros(len(current.item_ids), np.int64))[keep]
    return np.concatenate([counts, np.zeros(n_new, np.int64)])


def _padded_cooccurrence(bundle: Path, n_warm: int, n: int) -> sp.csr_matrix | None:
    """The warm block of the bundle's co-occurrence counts, cold rows empty, ``n`` x ``n``."""
    try:
        matrix = load_cooccurrence(bundle)[:n_warm, :n_warm].tocsr()
    except BundleError:
        return None
    return sp.csr_matrix((matrix.data, matrix.indices, np.concatenate(
        [matrix.indptr, np.full(n - n_warm, matrix.indptr[-1])])), shape=(n, n))
