"""Classification probe: learn labels for items from a few labelled ones, predict the rest.

A logistic regression on the (frozen) unit vectors. If a linear probe separates the labels well,
the embedding already encodes them; the held-out accuracy it reports (stratified k-fold on the
labelled items) against the majority-class baseline says how well.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from itemvec.data.ingest import read_table, require_columns
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.util.errors import DataError

logger = logging.getLogger(__name__)


def read_labels(path: str | Path, item_key: str = "item_id", label: str = "label") -> pl.DataFrame:
    """item_id (string) and label (string) columns of a label file, errors naming file and row."""
    path = Path(path)
    frame = read_table(path)
    require_columns(frame, {"--item-key": item_key, "--label-column": label}, path)
    frame = frame.select(pl.col(item_key).cast(pl.String).alias("item_id"),
                         pl.col(label).cast(pl.String).alias("label"))
    empty = frame["item_id"].is_null() | frame["label"].is_null() | (frame["label"] == "")
    if empty.any():
        row = int(empty.arg_true()[0]) + (2 if path.suffix.lower() in (".csv", ".tsv") else 1)
        raise DataError(f"{path}: row {row}: empty {item_key!r} or {label!r}")
    return frame.unique("item_id", keep="last", maintain_order=True)


def classify(embeddings: ItemEmbeddings, labels: pl.DataFrame, c: float = 1.0, folds: int = 5,
             seed: int = 0) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Predictions for every item (given labels kept, ``source`` says which) and a report."""
    rows, unknown = embeddings.known(labels["item_id"].to_list())
    known = labels.filter(pl.col("item_id").is_in([str(i) for i in embeddings.item_ids[rows]]))
    y = np.asarray(known["label"].to_list())
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"need labelled items of at least 2 classes in the model; got "
                        f"{len(classes)} ({len(y)} labelled items known, {unknown} unknown ids)")
    x = embeddings.vectors[rows]
    model = LogisticRegression(C=c, max_iter=2000)
    report: dict[str, Any] = {"labelled": int(len(y)), "unknown_ids": int(unknown),
                              "classes": int(len(classes)),
                              "majority_baseline": round(float(counts.max() / counts.sum()), 4)}
    k = int(min(folds, counts.min()))
    if k >= 2:
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        scores = cross_val_score(model, x, y, cv=cv)
        report["cv_accuracy"] = round(float(scores.mean()), 4)
        report["cv_folds"] = k
    else:
        logger.warning("a class has a single labelled item; no held-out accuracy")
    model.fit(x, y)
    proba = model.predict_proba(embeddings.vectors)
    best = proba.argmax(axis=1)
    predicted = model.classes_[best].astype(str)
    confidence = proba[np.arange(len(best)), best]
    given = np.zeros(len(embeddings), dtype=bool)
    given[rows] = True
    predicted[rows] = y
    confidence[rows] = 1.0
    frame = pl.DataFrame({
        "item_id": pl.Series([str(i) for i in embeddings.item_ids], dtype=pl.String),
        "label": pl.Series(predicted, dtype=pl.String),
        "confidence": np.round(confidence, 6).astype(np.float32),
        "source": np.where(given, "given", "predicted"),
    })
    report["predicted"] = int((~given).sum())
    return frame, report
