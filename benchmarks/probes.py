"""Do embeddings know item categories? Linear probe (accuracy, macro-F1) and k-means NMI.

Only items in the model vocabulary with a category label, and only categories with at least
``MIN_ITEMS`` such items, take part. The probe is multinomial logistic regression on
unit-normalised vectors with stratified 5-fold cross-validation (folds seeded); k-means uses as
many clusters as there are categories.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

logger = logging.getLogger(__name__)
MIN_ITEMS = 5


def category_targets(item_ids: np.ndarray, labels: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Indices of probe items and their integer class, keeping classes with >= MIN_ITEMS."""
    known = [(i, labels[str(item)]) for i, item in enumerate(item_ids) if str(item) in labels]
    counts = Counter(label for _, label in known)
    kept = [(i, label) for i, label in known if counts[label] >= MIN_ITEMS]
    classes = {label: k for k, label in enumerate(sorted({label for _, label in kept}))}
    index = np.array([i for i, _ in kept], dtype=np.int64)
    target = np.array([classes[label] for _, label in kept], dtype=np.int64)
    return index, target


def probe(vectors: np.ndarray, item_ids: np.ndarray, labels: dict[str, str],
          seed: int = 0, quick: bool = False) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, normalized_mutual_info_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    index, target = category_targets(item_ids, labels)
    n_classes = len(np.unique(target))
    if n_classes < 2:
        return {"items": int(len(index)), "classes": n_classes}
    x = vectors[index].astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    classifier = LogisticRegression(max_iter=100 if quick else 300, C=10.0)
    predicted = cross_val_predict(classifier, x, target, cv=folds)
    clusters = KMeans(n_clusters=n_classes, n_init=1 if quick else 3,
                      random_state=seed).fit_predict(x)
    majority = np.bincount(target).max() / len(target)
    return {"items": int(len(index)), "classes": int(n_classes),
            "accuracy": float(accuracy_score(target, predicted)),
            "macro_f1": float(f1_score(target, predicted, average="macro")),
            "nmi": float(normalized_mutual_info_score(target, clusters)),
            "majority_accuracy": float(majority)}
