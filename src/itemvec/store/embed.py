"""Embed new items into a trained bundle from their features alone (``itemvec embed``).

The bundle's feature spec and encoder weights featurise the new rows exactly as in training;
the extended bundle is written atomically like any other.
"""

from __future__ import annotations

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
    write_bundle,
)
from itemvec.util.errors import BundleError


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
    warm = set(current.item_ids[:encoder.n_items].tolist())
    incoming = table.filter(~pl.col("item_id").is_in(list(warm)))
    skipped = table.height - incoming.height
    vectors, bias = encoder.embed_features([spec.transform(incoming)[n] for n in spec.names])
    new_ids = incoming["item_id"].to_numpy().astype(object)
    old_table = current.item_table if current.item_table is not None else pl.DataFrame(
        {"item_id": [str(i) for i in current.item_ids]})
    arriving = set(new_ids.tolist())  # np.isin on object ids is quadratic: minutes at 1M items
    keep = np.fromiter((item not in arriving for item in current.item_ids.tolist()), dtype=bool,
                       count=len(current.item_ids))
    keep[:encoder.n_items] = True
    counts = (old_table["count"].to_numpy() if "count" in old_table.columns
              else np.zeros(len(current.item_ids), np.int64))[keep]
    item_table = pl.concat([old_table.filter(pl.Series(keep)).drop("count", strict=False),
                            incoming], how="diagonal_relaxed")
    ids = np.concatenate([current.item_ids[keep], new_ids])
    merged = StoredVectors(ids, np.concatenate([current.vectors[keep], vectors]).astype(np.float32),
                           np.concatenate([current.item_bias[keep], bias]).astype(np.float32),
                           current.temperature, current.query, item_table, current.manifest)
    n = len(ids)
    try:
        matrix = load_cooccurrence(bundle)[:encoder.n_items, :encoder.n_items].tocsr()
        matrix = sp.csr_matrix((matrix.data, matrix.indices, np.concatenate(
            [matrix.indptr, np.full(n - encoder.n_items, matrix.indptr[-1])])), shape=(n, n))
    except BundleError:
        matrix = None
    manifest = current.manifest
    stats = {**manifest.get("stats", {}), "cold_items": n - encoder.n_items}
    target = Path(out) if out is not None else bundle
    write_bundle(target, merged, config=manifest.get("config", {}), stats=stats,
                 encoder_state=state, cooccurrence=matrix,
                 item_counts=np.concatenate([counts, np.zeros(len(new_ids), np.int64)]),
                 extra_files=files)
    report = {"embedded": len(new_ids), "replaced": int((~keep).sum()),
              "skipped_warm": skipped, "items": n}
    return target, report
