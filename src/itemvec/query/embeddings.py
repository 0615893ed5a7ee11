"""``ItemEmbeddings``: trained item vectors that answer queries, with no trainer attached.

Like gensim's KeyedVectors: load a bundle, ask for related items or recommendations. Scores:

- ``similar_items``: cosine similarity (related items should not just be popular ones);
- ``recommend``: the history is pooled with recency weights (newest counts most), then
  ``cos(pooled, item) / temperature + popularity_weight * item_bias`` — the same logit the
  objective trained, so the learned popularity prior enters exactly as much as it was learned.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from itemvec.config import QueryConfig
from itemvec.util.errors import UnknownItemError

logger = logging.getLogger(__name__)

Result = tuple[np.ndarray, np.ndarray]
BatchResult = tuple[list[np.ndarray], list[np.ndarray]]


class ItemEmbeddings:
    """Unit item vectors plus popularity logits, indexed by string item id."""

    def __init__(self, item_ids: Sequence[str], vectors: np.ndarray,
                 item_bias: np.ndarray | None = None, temperature: float = 1.0,
                 query: QueryConfig | None = None, metadata: dict | None = None,
                 item_table=None) -> None:
        self.item_ids = np.asarray([str(i) for i in item_ids], dtype=object)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(self.item_ids) != len(self.vectors):
            raise ValueError(f"{len(self.item_ids)} item ids but {len(self.vectors)} vectors")
        n = len(self.item_ids)
        self.item_bias = np.zeros(n, np.float32) if item_bias is None else np.asarray(
            item_bias, dtype=np.float32)
        self.temperature = float(temperature)
        self.query = query or QueryConfig()
        self.metadata = metadata or {}
        self.item_table = item_table
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.vector_index = None  # optional itemvec.query.index backend; None = exact matmul

    def use_index(self, name: str | None = "auto", bundle: str | Path | None = None,
                  save: bool = False, **params) -> ItemEmbeddings:
        """Answer similar/recommend queries through an index backend (``exact``, ``hnsw``,
        ``ivf``; ``auto`` = exact up to 50k items, else hnsw; None = plain matmul).

        With ``bundle`` a stored index is reused when it matches these vectors.
        """
        from itemvec.query.index import build_index, load_index

        if name is None:
            self.vector_index = None
        elif bundle is not None:
            self.vector_index = load_index(bundle, self.vectors, name, save=save, **params)
        else:
            self.vector_index = build_index(name, self.vectors, **params)
        return self

    # -- lookup -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item: object) -> bool:
        return str(item) in self.index

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def indices(self, items: Iterable[str]) -> np.ndarray:
        """Vocabulary indices; an unknown id raises ``UnknownItemError`` naming it."""
        out = []
        for item in items:
            try:
                out.append(self.index[str(item)])
            except KeyError:
                raise UnknownItemError(f"unknown item {str(item)!r}: not in the model's "
                                       f"{len(self)} items") from None
        return np.asarray(out, dtype=np.int64)

    def vector(self, item: str) -> np.ndarray:
        return self.vectors[self.indices([item])[0]]

    def known(self, items: Iterable[str]) -> tuple[np.ndarray, int]:
        """Indices of the known items, in order, and how many were unknown (skipped)."""
        found = [self.index.get(str(item)) for item in items]
        kept = np.asarray([i for i in found if i is not None], dtype=np.int64)
        return kept, len(found) - len(kept)

    # -- queries ----------------------------------------------------------------------------
    def similar_items(self, items: str | Sequence[str], n: int = 10,
                      filter: Collection[str] | np.ndarray | None = None,
                      exclude: Collection[str] = ()) -> Result | BatchResult:
        """Nearest items by cosine. One id -> (ids, scores); a list -> lists of those."""
        single = isinstance(items, str)
        query = self.indices([items] if single else items)
        ids, values = self._nearest(self.vectors[query], n, self._blocked(filter, exclude),
                                    [np.array([q]) for q in query])
        return (ids[0], values[0]) if single else (ids, values)

    def similar_to_vector(self, vector: np.ndarray, n: int = 10,
                          filter: Collection[str] | np.ndarray | None = None,
                          exclude: Collection[str] = ()) -> Result:
        """Items nearest to an arbitrary vector (normalised first)."""
        vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        ids, values = self._nearest(vector, n, self._blocked(filter, exclude),
                                    [np.zeros(0, np.int64)])
        return ids[0], values[0]

    def recommend(self, history: Sequence[str] | Sequence[Sequence[str]], n: int = 10,
                  filter_seen: bool = True,
                  filter: Collection[str] | np.ndarray | None = None,
                  exclude: Collection[str] = ()) -> Result | BatchResult:
        """Items to show next given a history (oldest first). Unknown history items are skipped.

        One history (a list of ids) -> (ids, scores); a list of histories -> lists of those.
        """
        # A batch is a list of sequences; a single history may hold str or numeric ids.
        single = len(history) == 0 or isinstance(history[0], str) or not isinstance(
            history[0], Sequence | np.ndarray)
        histories = [history] if single else history
        indexed, skipped = [], 0
        for items in histories:
            known, unknown = self.known(items)
            indexed.append(known)
            skipped += unknown
        if skipped:
            logger.info("recommend: skipped %d unknown history items", skipped)
        self.last_skipped = skipped
        seen = indexed if filter_seen else [np.zeros(0, np.int64)] * len(indexed)
        if self.vector_index is not None:
            from itemvec.query.index import recommend_top

            rows, values = recommend_top(self.vector_index, self, indexed, n,
                                         self._blocked(filter, exclude), seen)
            ids = [self.item_ids[r].astype(str) for r in rows]
        else:
            scores = self.score_histories(indexed)
            ids, values = self._top(scores, n, self._blocked(filter, exclude), seen)
        return (ids[0], values[0]) if single else (ids, values)

    def history_weights(self, length: int) -> np.ndarray:
        """Weight of each history position (oldest first) in the pooled query vector.

        Recency weights (half-life in positions) normalised to sum 1, then scaled by the
        effective number of items ``(sum w)^2 / sum w^2`` to the power ``evidence_power``: a
        longer history is more evidence, so association gains on the popularity prior.
        """
        if length == 0:
            return np.zeros(0, dtype=np.float32)
        half_life = self.query.recency_half_life
        age = np.arange(length - 1, -1, -1, dtype=np.float64)
        weights = np.power(0.5, age / half_life) if half_life > 0 else np.ones_like(age)
        weights /= weights.sum()
        effective = 1.0 / float(np.square(weights).sum())
        return (weights * effective ** self.query.evidence_power).astype(np.float32)

    def pool(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Weighted sum of each history's vectors (zeros for an empty history).

        One sparse (histories x items) weight matrix times the vectors: weights depend only on
        a history's length, so they are computed once per length, not once per history.
        """
        lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
        if not lengths.any():
            return np.zeros((len(histories), self.dim), dtype=np.float32)
        by_length = {n: self.history_weights(int(n)) for n in np.unique(lengths)}
        weights = np.concatenate([by_length[n] for n in lengths])
        items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        matrix = sp.csr_matrix((weights, items, indptr), shape=(len(histories), len(self)))
        return np.asarray(matrix @ self.vectors, dtype=np.float32)

    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Recommendation logits over all items, one row per history (indices)."""
        logits = (self.pool(histories) / self.temperature) @ self.vectors.T  # 2 passes, not 3
        logits += self.query.popularity_weight * self.item_bias[None, :]
        return logits

    def with_query(self, **changes) -> ItemEmbeddings:
        """A view with other query settings (e.g. recency_half_life), sharing the vectors."""
        clone = object.__new__(ItemEmbeddings)
        clone.__dict__.update(self.__dict__)
        clone.query = self.query.replace(**changes)
        return clone

    # -- helpers ----------------------------------------------------------------------------
    def _nearest(self, queries: np.ndarray, n: int, blocked: np.ndarray | None,
                 seen: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Top-n by cosine: through ``vector_index`` when one is set, else one matmul."""
        if self.vector_index is None:
            return self._top(queries @ self.vectors.T, n, blocked, seen)
        from itemvec.query.index import nearest

        rows, values = nearest(self.vector_index, self.vectors, queries, n, blocked, seen)
        return [self.item_ids[r].astype(str) for r in rows], values

    def _blocked(self, filter, exclude: Collection[str]) -> np.ndarray | None:
        """Boolean mask of items that may not be returned."""
        if filter is None and not exclude:
            return None
        blocked = np.zeros(len(self), dtype=bool)
        if filter is not None:
            if isinstance(filter, np.ndarray) and filter.dtype == bool:
                blocked |= ~filter
            else:
                allowed, _ = self.known(filter)
                blocked[:] = True
                blocked[allowed] = False
        if exclude:
            blocked[self.known(exclude)[0]] = True
        return blocked

    def _top(self, scores: np.ndarray, n: int, blocked: np.ndarray | None,
             seen: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        scores = np.array(scores, dtype=np.float32, copy=True)
        if blocked is not None:
            scores[:, blocked] = -np.inf
        ids, values = [], []
        for row, items in enumerate(seen):
            scores[row, items] = -np.inf
            top = top_k(scores[row], n)
            ids.append(self.item_ids[top].astype(str))
            values.append(scores[row, top])
        return ids, values

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        from itemvec.store.bundle import write_embeddings_bundle

        write_embeddings_bundle(self, path)

    @classmethod
    def load(cls, path: str | Path) -> ItemEmbeddings:
        from itemvec.store.bundle import load_embeddings

        return load_embeddings(path)


def top_k(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest finite scores, best first."""
    finite = np.isfinite(scores)
    n = min(n, int(finite.sum()))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    part = part[np.isfinite(scores[part])]
    return part[np.argsort(-scores[part], kind="stable")]
