"""Do embeddings know item categories? Linear probe (accuracy, macro-F1) and k-means NMI.

Only items in the model vocabulary with a category label, and only categories with at least
``MIN_ITEMS`` such items, take part. The probe is multinomial logistic regression on
unit-normalised vectors, trained on a seeded stratified 75 % of the items and scored on the
other 25 %; k-means (one k-means++ start) uses as many clusters as there are categories. Sets
with more than ``MAX_ITEMS`` probe items use a seeded stratified sample of that many, to keep
the probe to seconds on 2 shared cores.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter

import numpy as np

logger = logging.getLogger(__name__)
MIN_ITEMS = 5
MAX_ITEMS = 6000


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
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import (
        accuracy_score,
        adjusted_mutual_info_score,
        f1_score,
        normalized_mutual_info_score,
    )
    from sklearn.model_selection import train_test_split

    index, target = category_targets(item_ids, labels)
    n_classes = len(np.unique(target))
    if n_classes < 2:
        return {"items": int(len(index)), "classes": n_classes}
    if len(index) > MAX_ITEMS:
        index, _, target, _ = train_test_split(index, target, train_size=MAX_ITEMS,
                                               stratify=target, random_state=seed)
    x = vectors[index].astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    fit_x, test_x, fit_y, test_y = train_test_split(x, target, test_size=0.25, stratify=target,
                                                    random_state=seed)
    with warnings.catch_warnings():  # a probe capped at max_iter is still a fair comparison
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier = LogisticRegression(max_iter=100 if quick else 200, C=10.0).fit(fit_x, fit_y)
    predicted = classifier.predict(test_x)
    clusters = KMeans(n_clusters=n_classes, n_init=1, random_state=seed).fit_predict(x)
    majority = np.bincount(fit_y).argmax()
    return {"items": int(len(index)), "classes": int(n_classes),
            "accuracy": float(accuracy_score(test_y, predicted)),
            "macro_f1": float(f1_score(test_y, predicted, average="macro")),
            "nmi": float(normalized_mutual_info_score(target, clusters)),
            "ami": float(adjusted_mutual_info_score(target, clusters)),
            "majority_accuracy": float((test_y == majority).mean())}
