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
from dataclasses import replace
from pathlib import Path

import numpy as np

from itemvec.config import QueryConfig
from itemvec.query.index import build_index, load_index, nearest, recommend_top
from itemvec.query.pooling import history_matrix, history_weights
from itemvec.store.bundle import read_vectors, write_bundle
from itemvec.util.errors import UnknownItemError
from itemvec.util.topk import top_k

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
        return history_weights(length, self.query.recency_half_life,
                               self.query.evidence_power).astype(np.float32)

    def pool(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Weighted sum of each history's vectors (zeros for an empty history)."""
        matrix = history_matrix(histories, len(self), self.query.recency_half_life,
                                self.query.evidence_power, np.float32)
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
        clone.query = replace(self.query, **changes)
        return clone

    # -- helpers ----------------------------------------------------------------------------
    def _nearest(self, queries: np.ndarray, n: int, blocked: np.ndarray | None,
                 seen: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Top-n by cosine: through ``vector_index`` when one is set, else one matmul."""
        if self.vector_index is None:
            return self._top(queries @ self.vectors.T, n, blocked, seen)
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
        """Write a bundle of these vectors, keeping the config and stats of their metadata."""
        write_bundle(path, self, config=self.metadata.get("config", {}),
                     stats=self.metadata.get("stats", {}))

    @classmethod
    def load(cls, path: str | Path, check: bool = True) -> ItemEmbeddings:
        """Read a bundle's vectors (checksums verified unless ``check`` is False)."""
        stored = read_vectors(path, check)
        return cls(stored.item_ids, stored.vectors, stored.item_bias,
                   temperature=stored.temperature, query=stored.query,
                   metadata=stored.manifest, item_table=stored.item_table)


def load_embeddings(path: str | Path, check: bool = True) -> ItemEmbeddings:
    """``ItemEmbeddings.load`` as a function, for callers that pass loaders around."""
    return ItemEmbeddings.load(path, check)
