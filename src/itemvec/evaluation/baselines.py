"""Reference recommenders scored with the same protocol as itemvec.

popularity and item-kNN need only the co-occurrence counts; EASE (numpy/scipy), item2vec
(gensim) and ALS (implicit) fit on the training contexts (``Contexts``). gensim and implicit
come with the bench extra (``pip install 'itemvec[bench]'``). ``benchmarks.methods`` tunes the
same fits over grids; the defaults here are its quick settings.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sl
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from itemvec.data.ingest import EventLog
from itemvec.query.pooling import history_matrix, recency_weights
from itemvec.util.errors import ConfigError
from itemvec.util.registry import Registry

logger = logging.getLogger(__name__)
baselines: Registry = Registry("baseline")
BENCH_EXTRA = "pip install 'itemvec[bench]'"
EASE_MAX_ITEMS = 30_000  # its dense items x items matrix: 30k items = 3.6 GB in float32


@dataclass(frozen=True)
class Contexts:
    """Training contexts over the model's items (CSR arrays, events in context order)."""

    indptr: np.ndarray
    items: np.ndarray
    n_items: int
    ordered: bool = True

    @classmethod
    def from_log(cls, log: EventLog, to_model: np.ndarray, n_items: int) -> Contexts:
        """``log``'s contexts with items mapped by ``to_model`` (log item -> model row or -1)."""
        mapped = np.asarray(to_model)[log.items]
        keep = mapped >= 0
        kept = np.concatenate([[0], np.cumsum(keep)])
        return cls(kept[log.indptr].astype(np.int64), mapped[keep].astype(np.int64), n_items,
                   log.ordered)

    def matrix(self) -> sp.csr_matrix:
        """(contexts x items), 1 where the item occurs."""
        matrix = sp.csr_matrix((np.ones(len(self.items), np.float32), self.items, self.indptr),
                               shape=(len(self.indptr) - 1, self.n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def sequences(self) -> list[list[str]]:
        """Contexts of two or more events as token lists (gensim's sentences)."""
        return [[str(i) for i in self.items[a:b]] for a, b in
                zip(self.indptr[:-1], self.indptr[1:], strict=True) if b - a > 1]

    def longest(self) -> int:
        return int(np.diff(self.indptr).max(initial=1))


def _tiebreak(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return 1e-9 * counts / max(counts.max(initial=0.0), 1.0)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _needs(contexts: Contexts | None, name: str) -> Contexts:
    if contexts is None:
        raise ConfigError(f"baseline {name!r} fits on the training contexts; pass contexts=")
    return contexts


@baselines.register("popularity")
class Popularity:
    """Most co-occurring items first, whatever the history."""

    def __init__(self, cooccurrence: sp.csr_matrix, item_counts: np.ndarray, **_) -> None:
        self.scores = np.asarray(item_counts, dtype=np.float64)

    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.tile(self.scores, (len(histories), 1))


@baselines.register("itemknn")
class ItemKNN:
    """Co-occurrence item-kNN: cosine-normalised counts, history pooled with recency weights.

    A tiny popularity term breaks the ties between items that never co-occur with the history.
    """

    def __init__(self, cooccurrence: sp.csr_matrix, item_counts: np.ndarray,
                 half_life: float = 3.0, **_) -> None:
        norms = np.sqrt(np.asarray(cooccurrence.sum(axis=1)).ravel())
        inverse = sp.diags(1.0 / np.maximum(norms, 1e-12))
        self.similarity = (inverse @ cooccurrence @ inverse).tocsr()
        self.half_life = half_life
        counts = np.asarray(item_counts, dtype=np.float64)
        self.tiebreak = 1e-9 * counts / max(counts.max(), 1.0)

    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        weights = history_matrix(histories, self.similarity.shape[0], self.half_life)
        return np.asarray((weights @ self.similarity).todense()) + self.tiebreak[None, :]


class PooledVectors:
    """Recency-weighted mean of the history's vectors, dotted with (possibly other) vectors."""

    def __init__(self, query: np.ndarray, target: np.ndarray, half_life: float,
                 tiebreak: np.ndarray) -> None:
        self.query, self.target, self.half_life, self.tiebreak = query, target, half_life, tiebreak

    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        weights = history_matrix(histories, len(self.query), self.half_life)
        pooled = np.asarray(weights @ self.query, dtype=np.float32)
        return pooled @ self.target.T + self.tiebreak[None, :]


class DenseScorer:
    """Recency-weighted history times a dense item x item weight matrix (EASE)."""

    def __init__(self, weights: np.ndarray, half_life: float, tiebreak: np.ndarray) -> None:
        self.weights, self.half_life, self.tiebreak = weights, half_life, tiebreak

    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        h = history_matrix(histories, self.weights.shape[0], self.half_life).astype(np.float32)
        return np.asarray(h @ self.weights) + self.tiebreak[None, :]


class FoldIn:
    """ALS scoring: solve for a user vector from the history (Hu, Koren, Volinsky 2008)."""

    def __init__(self, factors: np.ndarray, regularization: float, alpha: float,
                 half_life: float, tiebreak: np.ndarray) -> None:
        self.factors = factors.astype(np.float64)
        self.gram = self.factors.T @ self.factors + regularization * np.eye(factors.shape[1])
        self.alpha, self.half_life, self.tiebreak = alpha, half_life, tiebreak

    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        with threadpool_limits(1, "blas"):  # thousands of tiny solves: threads only cost
            users = self._users(histories)
        return users @ self.factors.T + self.tiebreak[None, :]

    def _users(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        users = np.zeros((len(histories), self.factors.shape[1]))
        for row, items in enumerate(histories):
            if len(items) == 0:
                continue
            confidence = self.alpha * recency_weights(len(items), self.half_life)
            y = self.factors[items]
            lhs = self.gram + (y * confidence[:, None]).T @ y
            users[row] = np.linalg.solve(lhs, ((1.0 + confidence)[:, None] * y).sum(axis=0))
        return users


# -- fits on the training contexts ---------------------------------------------------------------
def ease_weights(x: sp.csr_matrix, lam: float) -> np.ndarray:
    """EASE^R (Steck 2019): B = I - P diag(1/diag P), P = (X'X + lam I)^-1, diag(B) = 0.

    With fewer contexts than items P comes from the Woodbury identity,
    P = (I - X' (X X' + lam I)^-1 X) / lam, which needs only a contexts x contexts solve.
    float32 throughout: the n x n matrix is the memory bound (16k items: 1 GB).
    """
    n_contexts, n_items = x.shape
    x = x.astype(np.float32)
    if n_items <= n_contexts:
        gram = np.asarray((x.T @ x).todense(), dtype=np.float32)
        gram[np.diag_indices(n_items)] += lam
        factor = sl.cho_factor(gram, overwrite_a=True)
        precision = sl.cho_solve(factor, np.eye(n_items, dtype=np.float32), overwrite_b=True)
        del gram, factor
    else:
        kernel = np.asarray((x @ x.T).todense(), dtype=np.float32)
        kernel[np.diag_indices(n_contexts)] += lam
        factor = sl.cho_factor(kernel, overwrite_a=True)
        solved = sl.cho_solve(factor, np.asarray(x.todense()), overwrite_b=True)  # K^-1 X
        del kernel, factor
        precision = np.asarray(x.T @ solved, dtype=np.float32)  # X' K^-1 X, dense
        del solved
        precision *= -1.0
        precision[np.diag_indices(n_items)] += 1.0
        precision /= lam
    diagonal = np.diag(precision).copy()
    precision /= -diagonal[None, :]
    precision[np.diag_indices(n_items)] = 0.0
    return precision


def item2vec_vectors(contexts: Contexts, dim: int = 64, window: int = 5,
                     ns_exponent: float = 0.5, sample: float = 0.0, epochs: int = 5,
                     workers: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Skip-gram with negative sampling (gensim) over the contexts: input and output vectors.

    ``window=0`` makes the whole context the window (baskets have no order).
    """
    try:
        from gensim.models import Word2Vec
    except ModuleNotFoundError:
        raise ConfigError(f"baseline 'item2vec' needs gensim: {BENCH_EXTRA}") from None
    whole = window == 0
    model = Word2Vec(contexts.sequences(), vector_size=dim,
                     window=contexts.longest() if whole else window, sg=1, hs=0, negative=5,
                     ns_exponent=ns_exponent, sample=sample, epochs=epochs, min_count=1,
                     workers=workers, seed=seed, shrink_windows=not whole)
    found = np.array([str(i) in model.wv.key_to_index for i in range(contexts.n_items)])
    rows = np.array([model.wv.key_to_index.get(str(i), 0) for i in range(contexts.n_items)])
    return {"in": np.where(found[:, None], model.wv.vectors[rows], 0.0).astype(np.float32),
            "out": np.where(found[:, None], model.syn1neg[rows], 0.0).astype(np.float32)}


def als_factors(matrix: sp.csr_matrix, factors: int = 64, regularization: float = 0.1,
                alpha: float = 10.0, iterations: int = 15, workers: int = 2,
                seed: int = 0) -> np.ndarray:
    """implicit's ALS on the binary context x item matrix: the item factors."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ModuleNotFoundError:
        raise ConfigError(f"baseline 'als' needs implicit: {BENCH_EXTRA}") from None
    with threadpool_limits(1, "blas"):  # implicit's advice; it warns otherwise
        model = AlternatingLeastSquares(factors=factors, regularization=regularization,
                                        alpha=alpha, iterations=iterations, random_state=seed,
                                        num_threads=workers)
        model.fit(matrix, show_progress=False)
    return np.asarray(model.item_factors, dtype=np.float32)


# -- the fitted baselines ------------------------------------------------------------------------
@baselines.register("ease")
class Ease(DenseScorer):
    """EASE: a closed-form item x item regression on the training contexts (numpy/scipy)."""

    def __init__(self, cooccurrence: sp.csr_matrix, item_counts: np.ndarray,
                 contexts: Contexts | None = None, half_life: float = 3.0,
                 lam: float = 100.0, **_) -> None:
        contexts = _needs(contexts, "ease")
        if contexts.n_items > EASE_MAX_ITEMS:
            gigabytes = 4 * contexts.n_items ** 2 / 1e9
            raise ConfigError(f"baseline 'ease' needs a dense {contexts.n_items} x "
                              f"{contexts.n_items} matrix ({gigabytes:.0f} GB); it runs up to "
                              f"{EASE_MAX_ITEMS} items")
        super().__init__(ease_weights(contexts.matrix(), lam), half_life, _tiebreak(item_counts))


@baselines.register("item2vec")
class Item2Vec(PooledVectors):
    """item2vec (Barkan & Koenigstein 2016): gensim skip-gram, history scored by cosine."""

    def __init__(self, cooccurrence: sp.csr_matrix, item_counts: np.ndarray,
                 contexts: Contexts | None = None, half_life: float = 3.0, **params) -> None:
        contexts = _needs(contexts, "item2vec")
        params = {k: v for k, v in params.items() if k in ("dim", "window", "ns_exponent",
                                                           "sample", "epochs", "seed")}
        params.setdefault("window", 5 if contexts.ordered else 0)
        unit = _unit(item2vec_vectors(contexts, **params)["in"])
        super().__init__(unit, unit, half_life, _tiebreak(item_counts))


@baselines.register("als")
class ALS(FoldIn):
    """Implicit-feedback ALS (implicit), each history folded in as a new user."""

    def __init__(self, cooccurrence: sp.csr_matrix, item_counts: np.ndarray,
                 contexts: Contexts | None = None, half_life: float = 3.0,
                 factors: int = 64, regularization: float = 0.1, alpha: float = 10.0,
                 iterations: int = 15, seed: int = 0, **_) -> None:
        contexts = _needs(contexts, "als")
        items = als_factors(contexts.matrix(), factors, regularization, alpha, iterations,
                            seed=seed)
        super().__init__(items, regularization, alpha, half_life, _tiebreak(item_counts))


NEEDS = {"item2vec": "gensim", "als": "implicit"}  # baseline -> the bench extra's package


def check_baselines(names: Sequence[str]) -> None:
    """Fail before any training on an unknown baseline or one whose extra is not installed."""
    for name in names:
        baselines.get(name)
        package = NEEDS.get(name)
        if package is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(f"baseline {name!r} needs {package}: {BENCH_EXTRA}")


def build_baseline(name: str, cooccurrence: sp.csr_matrix, item_counts: np.ndarray,
                   contexts: Contexts | None = None, **params):
    """A fitted baseline with ``score_histories``; EASE, item2vec and ALS need ``contexts``."""
    return baselines.get(name)(cooccurrence, item_counts, contexts=contexts, **params)
