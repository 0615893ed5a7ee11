"""``ItemEmbeddings``: trained item vectors that answer queries, with no trainer attached.

Like gensim's KeyedVectors and implicit's model API: load a bundle, look a vector up with
``emb["id"]``, ask for related items or recommendations. Scores:

- ``similar_items`` / ``most_similar``: cosine similarity (related items should not just be
  popular ones);
- ``recommend``: the history is pooled with recency weights (newest counts most), then
  ``cos(pooled, item) / temperature + popularity_weight * item_bias`` — the same logit the
  objective trained, so the learned popularity prior enters exactly as much as it was learned.

One query and a batch of queries are separate methods (``similar_items`` /
``similar_items_batch``, ``recommend`` / ``recommend_batch``): nothing is guessed from the
argument's type, so ``recommend("50")`` is an error rather than the history ``["5", "0"]``.
Single calls return 1-D ``(ids, scores)``; batch calls return 2-D arrays with one row per query,
padded to ``n`` columns with id ``""`` and score ``-inf`` where fewer items qualify. Id arrays
hold ``str`` objects (dtype object): a fixed-width numpy string array costs rows x the longest
id, so one long id would multiply the memory of every result.

Cold items (from an item table, never seen in behaviour; rows from ``n_warm`` on) carry the
query setting ``cold_similarity_offset`` in similar results, the shift chosen on validation at
train time (``itemvec.train.coldstart``) so they take at most ``features.max_warm_drop`` of warm
neighbours; ``cold="include"`` ranks them by plain cosine, ``"exclude"`` never returns them. A
bundle without the calibration ranks them below every warm item (``UNCALIBRATED_OFFSET``).
Every ``Results`` marks its cold items (``result.cold``).

A compact bundle (``store.compact``) stores each distinct cold vector once plus a row -> vector
index (``vector_rows``): queries score the stored vectors (warm + distinct cold, often a few
percent of a million-row catalogue) and gather each item's score, so neither RAM nor matmul
grows with the cold rows. ``vectors`` (every item's row) is expanded on first use only, for
callers that need the full matrix (index backends, ``export``); ``vectors_of(rows)`` and the
query methods never expand it.

Ids are strings. When every training id is a canonical integer (``"7"``, ``"-3"``; not
``"007"`` or ``"-0"``) Python and numpy integers are accepted wherever an id is; returned ids
stay strings. A query never writes to the object, so one instance can serve concurrent threads
(reading ``vectors`` of a compact model caches the expansion, built once under a lock).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from itemvec.config import QueryConfig
from itemvec.query.exact import logit_top
from itemvec.query.index import (
    INDEX_RECOMMEND_MIN_ITEMS,
    build_index,
    load_index,
    nearest,
    recommend_top,
)
from itemvec.query.pooling import history_weights, pool_rows
from itemvec.query.recommend_index import (
    RECOMMEND_INDEX_MIN_ITEMS,
    RecommendIndex,
    build_recommend_index,
    load_recommend_index,
)
from itemvec.store.bundle import read_vectors, write_bundle
from itemvec.store.mapped import mapped_expansion, mapped_item_ids
from itemvec.util.errors import UnknownItemError
from itemvec.util.topk import top_k

logger = logging.getLogger(__name__)

Filter = Collection[Any] | np.ndarray | None
PAD_ID = ""
COLD_MODES = ("calibrated", "include", "exclude")
UNCALIBRATED_OFFSET = -2.0  # below any cosine of a warm item: cold items only fill what is left
_EXPANDING = threading.Lock()  # one expansion of a compact model at a time (module-wide: picklable)


class Results(tuple):
    """``(ids, scores)`` that also says how many query ids were unknown and skipped.

    Unpacks as a pair (``ids, scores = emb.recommend(...)``); ``skipped`` is an int for one
    query and an int array (one per row) for a batch; ``cold`` is a bool array shaped like
    ``ids``: True where the item is cold (item-table features only, no behaviour).
    """

    def __new__(cls, ids: np.ndarray, scores: np.ndarray, skipped: int | np.ndarray = 0,
                cold: np.ndarray | None = None) -> Results:
        self = super().__new__(cls, (ids, scores))
        self.skipped = skipped
        self.cold = np.zeros(np.shape(ids), dtype=bool) if cold is None else cold
        return self

    @property
    def ids(self) -> np.ndarray:
        """Item ids, best first (str)."""
        return self[0]

    @property
    def scores(self) -> np.ndarray:
        """Scores aligned with ``ids`` (float32)."""
        return self[1]


class SortedIds(Mapping[str, int]):
    """Id -> row by binary search over sorted ids (e.g. memory-mapped, shared by processes):
    a drop-in for the ``{id: row}`` dict without a Python object per id."""

    def __init__(self, sorted_ids: np.ndarray, rows: np.ndarray, ids: np.ndarray) -> None:
        # plain ndarray views of the maps: indexing a np.memmap wraps every result in a memmap
        self.sorted, self.rows, self.ids = (np.asarray(a) for a in (sorted_ids, rows, ids))
        # ids longer than the stored width cannot be present, and searching for one would
        # make numpy copy the whole sorted array to its width (15 ms and 48 MB at 1M ids)
        self.width = sorted_ids.dtype.itemsize // np.dtype("U1").itemsize

    def get(self, key: object, default: Any = None) -> Any:
        if not isinstance(key, str) or len(key) > self.width:
            return default
        at = int(np.searchsorted(self.sorted, key))
        if at < len(self.sorted) and self.sorted[at] == key:
            return int(self.rows[at])
        return default

    def rows_of(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of many ids in one binary search (-1 where unknown): a request's ids cost
        one numpy call, not one each (~4 us apiece at 1M ids)."""
        if not len(self.sorted) or max(map(len, keys), default=0) > self.width:
            return np.asarray([self.get(key, -1) for key in keys], dtype=np.int64)
        probe = np.asarray(keys, dtype=self.sorted.dtype)
        at = np.searchsorted(self.sorted, probe)
        np.minimum(at, len(self.sorted) - 1, out=at)
        return np.where(self.sorted[at] == probe, self.rows[at], -1).astype(np.int64, copy=False)

    def __getitem__(self, key: str) -> int:
        row = self.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids.tolist())

    def __len__(self) -> int:
        return len(self.ids)


class ItemEmbeddings:
    """Unit item vectors plus popularity logits, indexed by string item id."""

    def __init__(self, item_ids: Sequence[str], vectors: np.ndarray,
                 item_bias: np.ndarray | None = None, temperature: float = 1.0,
                 query: QueryConfig | None = None, metadata: dict | None = None,
                 item_table=None, n_warm: int | None = None,
                 index: SortedIds | None = None, vector_rows: np.ndarray | None = None) -> None:
        # With ``index`` (``load(..., mapped_cache=...)``) the ids stay a unicode array as given.
        # With ``vector_rows`` ``vectors`` holds the stored (distinct) rows, item i's vector
        # being ``vectors[vector_rows[i]]``.
        self.item_ids = (np.asarray(item_ids) if index is not None else
                         np.asarray([str(i) for i in item_ids], dtype=object))
        self._set_vectors(vectors, vector_rows)
        n = len(self.item_ids)
        self.item_bias = np.zeros(n, np.float32) if item_bias is None else np.asarray(
            item_bias, dtype=np.float32)
        self.temperature = float(temperature)
        self.query = query or QueryConfig()
        self.metadata = metadata or {}
        self.item_table = item_table
        self.index = index if index is not None else {
            item: i for i, item in enumerate(self.item_ids)}
        self.integer_ids = _all_integer(self.item_ids)
        self.vector_index = None  # optional itemvec.query.index backend; None = exact matmul
        self.recommend_index: RecommendIndex | None = None  # set by use_index for large models
        self.n_warm = n if n_warm is None else int(n_warm)  # rows from n_warm on are cold
        if not 0 <= self.n_warm <= n:
            raise ValueError(f"n_warm {n_warm} is outside 0..{n} items")

    def expand_with(self, expansion: Callable[[], np.ndarray]) -> None:
        """Get every item's row from ``expansion`` (e.g. a file the serving workers all map)
        instead of gathering a private copy on the first read of ``vectors``."""
        self._expand = expansion

    def _set_vectors(self, vectors: np.ndarray, rows: np.ndarray | None) -> None:
        self.stored_vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = None if rows is None else np.asarray(rows)
        if rows is not None and (rows.ndim != 1 or rows.dtype == bool
                                 or not np.issubdtype(rows.dtype, np.integer)):
            raise ValueError(f"vector_rows must be 1-D integers, one per item; got "
                             f"{rows.dtype} of shape {rows.shape}")
        self.vector_rows = rows
        self._expanded = None if rows is not None else self.stored_vectors
        self._expand = None  # how to expand instead of a private gather (``load``'s mapped cache)
        count = len(self.item_ids if rows is None else self.vector_rows)
        if len(self.item_ids) != (len(self.stored_vectors) if rows is None else count):
            raise ValueError(f"{len(self.item_ids)} item ids but "
                             f"{len(self.stored_vectors) if rows is None else count} vectors")
        if rows is not None and len(rows) and (int(rows.min()) < 0
                                               or int(rows.max()) >= len(self.stored_vectors)):
            raise ValueError(f"vector_rows index outside the {len(self.stored_vectors)} "
                             "stored vectors")

    @property
    def vectors(self) -> np.ndarray:
        """Every item's unit vector, one row per item (a compact model expands it once)."""
        expanded = self._expanded
        if expanded is None:
            with _EXPANDING:  # racing first reads build (and hold) one expansion, not one each
                if self._expanded is None:
                    logger.info("expanding %d stored vectors to %d rows",
                                len(self.stored_vectors), len(self.vector_rows))
                    self._expanded = (self.stored_vectors[self.vector_rows]
                                      if self._expand is None else self._expand())
                expanded = self._expanded
        return expanded

    @vectors.setter
    def vectors(self, vectors: np.ndarray) -> None:
        self._set_vectors(vectors, None)

    @property
    def compact(self) -> bool:
        """Whether vectors are stored as distinct rows plus a row index (``vector_rows``)."""
        return self.vector_rows is not None

    def vectors_of(self, rows: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """The vectors of item ``rows`` (a view-free copy for an array of rows), never
        expanding a compact model."""
        if self.vector_rows is None:
            return self.stored_vectors[rows]
        return self.stored_vectors[self.vector_rows[rows]]

    def cosines(self, queries: np.ndarray) -> np.ndarray:
        """``queries @ vectors.T``, (queries x items); a compact model scores its stored rows
        and gathers each item's column."""
        scores = queries @ self.stored_vectors.T
        if self.vector_rows is None:
            return scores
        return np.take(scores, self.vector_rows, axis=1)

    def use_index(self, name: str | None = "auto", bundle: str | Path | None = None,
                  save: bool = False, mmap: bool = False, **params) -> ItemEmbeddings:
        """Answer similar/recommend queries through an index backend (``exact``, ``hnsw``,
        ``ivf``; ``auto`` = exact up to 50k items, else hnsw; None = plain matmul).

        With ``bundle`` a stored index is reused when it matches these vectors (``mmap``:
        memory-mapped from its file rather than read into memory; ``save``: a fresh build is
        stored). An approximate backend over ``RECOMMEND_INDEX_MIN_ITEMS`` items or more also
        gets a recommendation index (``query.recommend_index``), stored and reused the same
        way. Call it before serving queries: it is the one method that changes the object.
        """
        if name is None:
            self.vector_index = None
        elif bundle is not None:
            self.vector_index = load_index(bundle, self.vectors, name, save=save, mmap=mmap,
                                           **params)
        else:
            self.vector_index = build_index(name, self.vectors, **params)
        self.recommend_index = self._recommend_index_for(bundle, save, mmap)
        return self

    def _recommend_index_for(self, bundle: str | Path | None, save: bool,
                             mmap: bool) -> RecommendIndex | None:
        """The logit index beside an approximate similar index on a large model (None: exact
        scan or ``recommend_top``; a compact model's shared rows are left to the exact scan)."""
        if (self.vector_index is None or not self.vector_index.approximate or self.compact
                or len(self) < RECOMMEND_INDEX_MIN_ITEMS):
            return None
        args = (self.vectors, self.item_bias, self.temperature, self.query.popularity_weight,
                self.pool)
        if bundle is None:
            return build_recommend_index(*args)
        return load_recommend_index(bundle, *args, save=save, mmap=mmap)

    # -- lookup -----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of items."""
        return len(self.item_ids)

    def __iter__(self) -> Iterator[str]:
        """Item ids (str) in row order, the order of ``item_ids`` and ``vectors``."""
        return iter(self.item_ids.tolist())

    def __contains__(self, item: object) -> bool:
        """Whether ``item`` is a known id. An int where the training ids were not ints raises
        TypeError (as ``1 in "abc"`` does) rather than quietly answering False."""
        return self.key(item) in self.index

    def __getitem__(self, item: str | int) -> np.ndarray:
        """The item's unit vector (1-D float32 copy); ``UnknownItemError`` names an unknown id."""
        return np.array(self.vectors_of(self.row(item)), copy=True)

    def __repr__(self) -> str:
        return f"ItemEmbeddings({len(self)} items, dim {self.dim})"

    @property
    def dim(self) -> int:
        """Vector length."""
        return self.stored_vectors.shape[1]

    def key(self, item: object) -> str:
        """The string id for ``item``: a str as is, an int only where training ids were ints."""
        if isinstance(item, str):
            return str(item)
        if isinstance(item, int | np.integer) and not isinstance(item, bool | np.bool_):
            if self.integer_ids:
                return str(int(item))
            example = f" (e.g. {self.item_ids[0]!r})" if len(self) else ""
            raise TypeError(f"item id {item!r} is an int but this model's ids are strings"
                            f"{example}; pass str ids")
        if isinstance(item, Iterable) and not isinstance(item, bytes):
            raise TypeError(f"expected one item id, got {type(item).__name__} {item!r}; "
                            "a list of ids goes to the *_batch methods or indices()")
        raise TypeError(f"item id must be a str{' or int' if self.integer_ids else ''}, got "
                        f"{type(item).__name__} {item!r}")

    def row(self, item: str | int) -> int:
        """Row of one id in ``vectors``; an unknown id raises ``UnknownItemError`` naming it."""
        key = self.key(item)
        try:
            return self.index[key]
        except KeyError:
            raise UnknownItemError(f"unknown item {key!r}: not in the model's "
                                   f"{len(self)} items") from None

    def indices(self, items: Iterable[str | int]) -> np.ndarray:
        """Rows of several ids; an unknown id raises ``UnknownItemError`` naming it."""
        keys = [self.key(item) for item in _ids(items, "items")]
        rows = self._lookup(keys)
        if len(rows) and rows.min() < 0:
            self.row(keys[int(np.argmin(rows))])  # raises, naming the first unknown id
        return rows

    def vector(self, item: str | int) -> np.ndarray:
        """Same as ``emb[item]``: the item's unit vector."""
        return self[item]

    @property
    def cold(self) -> np.ndarray:
        """Bool per row: True for cold items (features only, never seen in behaviour)."""
        return np.arange(len(self)) >= self.n_warm

    def is_cold(self, ids: np.ndarray) -> np.ndarray:
        """Bool array shaped like ``ids``: True for cold items (False for padding ``""``)."""
        ids = np.asarray(ids, dtype=object)
        if self.n_warm == len(self):
            return np.zeros(ids.shape, dtype=bool)
        rows = np.asarray([self.index.get(str(i), -1) for i in ids.ravel()], dtype=np.int64)
        return (rows >= self.n_warm).reshape(ids.shape)

    def cold_offset(self, cold: str = "calibrated") -> float | None:
        """What similar adds to cold items' cosines under ``cold``; None = never return them."""
        if cold not in COLD_MODES:
            raise ValueError(f"cold must be one of {', '.join(COLD_MODES)}, got {cold!r}")
        if cold == "exclude":
            return None
        if cold == "include":
            return 0.0
        offset = self.query.cold_similarity_offset
        return UNCALIBRATED_OFFSET if offset is None else float(offset)

    def _results(self, ids: np.ndarray, scores: np.ndarray, skipped: int | np.ndarray = 0
                 ) -> Results:
        return Results(ids, scores, skipped=skipped, cold=self.is_cold(ids))

    def known(self, items: Iterable[str | int]) -> tuple[np.ndarray, int]:
        """Rows of the known ids, in order, and how many ids were unknown (skipped)."""
        rows, skipped = self.known_many([_ids(items, "items")])
        return rows[0], int(skipped[0])

    def known_many(self, histories: Iterable[Iterable[str | int]]
                   ) -> tuple[list[np.ndarray], np.ndarray]:
        """``known`` of each history, all ids looked up together (one binary search over
        memory-mapped ids for a whole batch of requests)."""
        keys = [[self.key(item) for item in _ids(history, f"histories[{position}]")]
                for position, history in enumerate(histories)]
        found = self._lookup([key for row in keys for key in row])
        parts = np.split(found, np.cumsum([len(row) for row in keys])[:-1]) if keys else []
        rows = [part[part >= 0] for part in parts]
        return rows, np.asarray([len(p) - len(r) for p, r in zip(parts, rows, strict=True)],
                                dtype=np.int64)

    def _lookup(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of str ids (-1 where unknown): one binary search for mapped ids."""
        if isinstance(self.index, SortedIds):
            return self.index.rows_of(keys)
        return np.asarray([self.index.get(key, -1) for key in keys], dtype=np.int64)

    # -- item to item -----------------------------------------------------------------------
    def similar_items(self, item: str | int, n: int = 10, filter: Filter = None,
                      exclude: Collection[Any] = (), cold: str = "calibrated") -> Results:
        """Up to ``n`` items nearest to one item by cosine, best first, never the item itself.

        ``filter``: the only ids that may be returned (or a boolean mask over ``item_ids``);
        ``exclude``: ids never returned; ``cold``: calibrated (cold items' cosines carry the
        validated offset), include (plain cosine) or exclude. Returns 1-D ``(ids, scores)``.
        """
        ids, scores = self._similar_rows([item], n, filter, exclude, cold)
        return self._results(ids[0], scores[0])

    def similar_items_batch(self, items: Iterable[str | int], n: int = 10, filter: Filter = None,
                            exclude: Collection[Any] = (), cold: str = "calibrated") -> Results:
        """``similar_items`` for many items at once: 2-D ``(ids, scores)``, shape (len, n).

        A row with fewer than ``n`` allowed items is padded with id ``""`` and score ``-inf``.
        """
        ids, scores = self._similar_rows(items, n, filter, exclude, cold)
        return self._results(*_pad(ids, scores, n), skipped=np.zeros(len(ids), np.int64))

    def similar_items_many(self, items: Iterable[str | int], n: int = 10, filter: Filter = None,
                           exclude: Collection[Any] = (), cold: str = "calibrated"
                           ) -> list[Results]:
        """``similar_items`` for many items searched together, one unpadded ``Results`` each.

        The same answers as one by one when the index searches each query on its own (FAISS
        below 20 queries, as ``serve`` batches them); exact matrix products differ in the last
        bits with the batch's shape."""
        ids, scores = self._similar_rows(items, n, filter, exclude, cold)
        return [self._results(i, s) for i, s in zip(ids, scores, strict=True)]

    def similar_to_vector(self, vector: np.ndarray, n: int = 10, filter: Filter = None,
                          exclude: Collection[Any] = (), cold: str = "include") -> Results:
        """Up to ``n`` items nearest to an arbitrary vector (normalised first); 1-D results.

        ``cold`` as in ``similar_items``; plain cosine by default (a vector has no behaviour
        evidence for cold items to crowd out)."""
        _check_n(n)
        vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        ids, values = self._nearest(vector, n, self._blocked(filter, exclude),
                                    [np.zeros(0, np.int64)], self.cold_offset(cold))
        return self._results(ids[0], values[0])

    def most_similar(self, positive: Iterable[str | int] = (), negative: Iterable[str | int] = (),
                     n: int = 10, filter: Filter = None, exclude: Collection[Any] = ()) -> Results:
        """gensim's ``most_similar``: up to ``n`` items nearest to positives minus negatives.

        The query is the mean of the positives' unit vectors and the negatives' negated unit
        vectors (``king - man + woman`` is ``positive=[king, woman], negative=[man]``),
        normalised; scores are cosines to it. The given items are never returned.
        """
        _check_n(n)
        plus, minus = self.indices(_ids(positive, "positive")), self.indices(
            _ids(negative, "negative"))
        if not len(plus) and not len(minus):
            raise ValueError("most_similar needs at least one id in positive or negative")
        query = np.concatenate([self.vectors_of(plus), -self.vectors_of(minus)]).mean(axis=0)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        given = np.union1d(plus, minus).astype(np.int64)
        ids, values = self._nearest(query[None, :], n, self._blocked(filter, exclude), [given],
                                    self.cold_offset("calibrated"))
        return self._results(ids[0], values[0])

    # -- recommendations ----------------------------------------------------------------------
    def recommend(self, history: Iterable[str | int], n: int = 20, filter_seen: bool = True,
                  filter: Filter = None, exclude: Collection[Any] = ()) -> Results:
        """Up to ``n`` items to show next after ONE history (a sequence of ids, oldest first).

        Unknown history ids are skipped (``result.skipped`` counts them); with ``filter_seen``
        history items are not recommended. An empty history ranks by learned popularity.
        A bare id raises TypeError: wrap it in a list. Returns 1-D ``(ids, scores)``.
        """
        ids, scores, skipped = self._recommend_rows([_ids(history, "history")], n, filter_seen,
                                                    filter, exclude)
        return self._results(ids[0], scores[0], skipped=int(skipped[0]))

    def recommend_batch(self, histories: Iterable[Iterable[str | int]], n: int = 20,
                        filter_seen: bool = True, filter: Filter = None,
                        exclude: Collection[Any] = ()) -> Results:
        """``recommend`` for many histories: 2-D ``(ids, scores)`` of shape (len, n).

        Rows with fewer than ``n`` candidates are padded with id ``""`` and score ``-inf``;
        ``result.skipped`` holds each history's number of unknown ids.
        """
        ids, scores, skipped = self._recommend_rows(_ids(histories, "histories"), n,
                                                    filter_seen, filter, exclude)
        return self._results(*_pad(ids, scores, n), skipped=skipped)

    def recommend_many(self, histories: Iterable[Iterable[str | int]], n: int = 20,
                       filter_seen: bool = True, filter: Filter = None,
                       exclude: Collection[Any] = ()) -> list[Results]:
        """``recommend`` for many histories scored together, one unpadded ``Results`` each:
        every one the same, bit for bit, as ``recommend`` of that history alone."""
        ids, scores, skipped = self._recommend_rows(_ids(histories, "histories"), n,
                                                    filter_seen, filter, exclude)
        return [self._results(i, s, skipped=int(k))
                for i, s, k in zip(ids, scores, skipped, strict=True)]

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
        return pool_rows(histories, self.stored_vectors, self.query.recency_half_life,
                         self.query.evidence_power, self.vector_rows)

    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Recommendation logits over all items, one row per history (rows, not ids)."""
        logits = self.cosines(self.pool(histories) / self.temperature)  # 2 passes, not 3
        logits += self.query.popularity_weight * self.item_bias[None, :]
        return logits

    def with_query(self, **changes) -> ItemEmbeddings:
        """A view with other query settings (e.g. recency_half_life), sharing the vectors."""
        clone = object.__new__(ItemEmbeddings)
        clone.__dict__.update(self.__dict__)
        clone.query = self.query.replace(**changes)
        return clone

    # -- helpers ----------------------------------------------------------------------------
    def _similar_rows(self, items: Iterable[Any], n: int, filter: Filter,
                      exclude: Collection[Any], cold: str = "calibrated"
                      ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Unpadded top-n cosine rows, one per query item (the item itself left out)."""
        _check_n(n)
        offset = self.cold_offset(cold)
        rows = self.indices(items)
        return self._nearest(self.vectors_of(rows), n, self._blocked(filter, exclude),
                             [np.array([r]) for r in rows], offset)

    def _recommend_rows(self, histories: Iterable[Any], n: int, filter_seen: bool,
                        filter: Filter, exclude: Collection[Any]
                        ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Unpadded top-n logit rows per history and each history's count of unknown ids:
        through the recommend index when there is one (inner product search, exact logits),
        else every item scored exactly, or ``recommend_top``'s proved candidates at 200k+."""
        _check_n(n)
        indexed, skipped = self.known_many(histories)
        blocked = self._blocked(filter, exclude)
        seen = indexed if filter_seen else [np.zeros(0, np.int64)] * len(indexed)
        if self.recommend_index is not None:
            rows, scores = self.recommend_index.search(self.pool(indexed), n, blocked, seen,
                                                       self.query.popularity_weight)
        elif self.vector_index is None or len(self) < INDEX_RECOMMEND_MIN_ITEMS:
            rows, scores = self.top_logits(self.pool(indexed), n, blocked, seen)
        else:
            rows, scores = recommend_top(self.vector_index, self, indexed, n, blocked, seen)
        return [self.item_ids[r] for r in rows], scores, skipped

    def top_logits(self, pooled: np.ndarray, n: int, blocked: np.ndarray | None,
                   seen: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Exact top-n rows and logits per pooled history (rows of ``pooled``), scoring every
        item; a row's answer does not depend on the other rows (``query.exact``)."""
        queries = np.asarray(pooled / np.float32(self.temperature), dtype=np.float32)
        return logit_top(self.stored_vectors, self.item_bias, self.query.popularity_weight,
                         queries, n, blocked, seen, self.vector_rows)

    def _nearest(self, queries: np.ndarray, n: int, blocked: np.ndarray | None,
                 seen: Sequence[np.ndarray], offset: float | None = 0.0
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Top-n by cosine, ``offset`` added to cold items' (None: cold items never returned):
        through ``vector_index`` when one is set, else one matmul."""
        if self.n_warm < len(self) and offset is None:
            blocked = self.cold if blocked is None else blocked | self.cold
        shift = 0.0 if offset is None or self.n_warm == len(self) else offset
        if self.vector_index is None:
            scores = self.cosines(queries)
            if shift:
                scores[:, self.n_warm:] += np.float32(shift)
            return self._top(scores, n, blocked, seen)
        if not shift:
            rows, values = nearest(self.vector_index, self.vectors, queries, n, blocked, seen)
        else:
            rows, values = self._shifted_nearest(queries, n, blocked, seen, shift)
        return [self.item_ids[r] for r in rows], values

    def _shifted_nearest(self, queries: np.ndarray, n: int, blocked: np.ndarray | None,
                         seen: Sequence[np.ndarray], shift: float
                         ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Index search of warm and of cold items apart, cold cosines shifted, rows merged."""
        base = np.zeros(len(self), dtype=bool) if blocked is None else blocked
        warm = nearest(self.vector_index, self.vectors, queries, n, base | self.cold, seen)
        cold = nearest(self.vector_index, self.vectors, queries, n, base | ~self.cold, seen)
        rows, values = [], []
        for w_rows, w_vals, c_rows, c_vals in zip(*warm, *cold, strict=True):
            merged = np.concatenate([w_rows, c_rows])
            scores = np.concatenate([w_vals, c_vals + np.float32(shift)]).astype(np.float32)
            order = np.argsort(-scores, kind="stable")[:n]
            rows.append(merged[order])
            values.append(scores[order])
        return rows, values

    def _blocked(self, filter: Filter, exclude: Collection[Any]) -> np.ndarray | None:
        """Boolean mask of items that may not be returned."""
        if filter is None and not len(exclude):
            return None
        blocked = np.zeros(len(self), dtype=bool)
        if isinstance(filter, np.ndarray) and filter.dtype == bool:
            if filter.shape != (len(self),):
                raise ValueError(f"filter mask has shape {filter.shape}; it needs one bool per "
                                 f"item, shape ({len(self)},)")
            blocked |= ~filter
        elif filter is not None:
            blocked[:] = True
            blocked[self.known(_ids(filter, "filter"))[0]] = False
        if len(exclude):
            blocked[self.known(_ids(exclude, "exclude"))[0]] = True
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
            ids.append(self.item_ids[top])
            values.append(scores[row, top])
        return ids, values

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write a bundle of these vectors, keeping the config and stats of their metadata."""
        stats = {**self.metadata.get("stats", {}), "cold_items": len(self) - self.n_warm}
        write_bundle(path, self, config=self.metadata.get("config", {}), stats=stats)

    @classmethod
    def load(cls, path: str | Path, check: bool = True, mmap: bool = False,
             mapped_cache: str | Path | None = None) -> ItemEmbeddings:
        """Read a bundle's vectors (checksums verified unless ``check`` is False; ``mmap``:
        vectors and biases memory-mapped read-only from the bundle files, not copied; with
        ``mapped_cache`` too the ids and their lookup are mapped from ``store.mapped`` files)."""
        mapped = (mapped_item_ids(path, mapped_cache) if mmap and mapped_cache is not None
                  else None)  # None too when ids are too long to share as fixed-width arrays
        stored = read_vectors(path, check, mmap, item_ids=mapped is None)
        ids, index = stored.item_ids, None
        if mapped is not None:
            ids, ordered, rows = mapped
            index = SortedIds(ordered, rows, ids)
        embeddings = cls(ids, stored.vectors, stored.item_bias,
                         temperature=stored.temperature, query=stored.query,
                         metadata=stored.manifest, item_table=stored.item_table,
                         n_warm=warm_items(stored.manifest, len(stored.item_bias)), index=index,
                         vector_rows=stored.vector_rows)
        if mmap and mapped_cache is not None and embeddings.compact:
            # every worker maps one expansion (an index backend reads every item's row)
            embeddings.expand_with(functools.partial(
                mapped_expansion, mapped_cache, stored.manifest, embeddings.stored_vectors,
                embeddings.vector_rows))
        return embeddings


def warm_items(manifest: dict, n: int) -> int:
    """How many leading rows of a bundle are warm: cold items (``stats.cold_items``) come last
    in every bundle ``train``, ``embed`` and ``update`` write."""
    cold = (manifest.get("stats") or {}).get("cold_items") or 0
    return max(n - int(cold), 0)


def load_embeddings(path: str | Path, check: bool = True, mmap: bool = False,
                    mapped_cache: str | Path | None = None) -> ItemEmbeddings:
    """``ItemEmbeddings.load`` as a function, for callers that pass loaders around."""
    return ItemEmbeddings.load(path, check, mmap, mapped_cache)


def _all_integer(item_ids: np.ndarray) -> bool:
    """Whether every id is a canonical integer string ("7", "-3"; not "007", "-0", "+1", "").

    Checked on the bytes of all ids joined by newlines, vectorised: a regex over a million ids
    took most of a second of every bundle load.
    """
    if not len(item_ids):
        return False
    joined = "\n".join(item_ids.tolist())
    if not joined or joined.count("\n") != len(item_ids) - 1 or not joined.isascii():
        return False
    text = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    digit = (text >= ord("0")) & (text <= ord("9"))
    newline, minus = text == ord("\n"), text == ord("-")
    if not (digit | newline | minus).all():
        return False
    before = np.concatenate([[ord("\n")], text[:-1]])  # a token starts after a newline
    after = np.concatenate([text[1:], [ord("\n")]])  # and ends before one
    starts_token = before == ord("\n")
    digit_after = (after >= ord("0")) & (after <= ord("9"))
    bad_minus = minus & ~(starts_token & digit_after & (after != ord("0")))
    zero_start = (text == ord("0")) & (starts_token | (before == ord("-")))
    bad_zero = zero_start & ((after != ord("\n")) | (before == ord("-")))
    empty = newline & starts_token | (text[-1] == ord("\n"))
    return not (bad_minus.any() or bad_zero.any() or empty.any())


def _ids(values: Any, name: str) -> Iterable[Any]:
    """``values`` as an iterable of ids; a bare id (str, bytes, int) raises a TypeError."""
    if isinstance(values, str | bytes | int | np.integer):
        raise TypeError(f"{name} must be a list of item ids, got the single {type(values).__name__} "
                        f"{values!r}; wrap it in a list: [{values!r}]")
    if not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of item ids, got {type(values).__name__}")
    return values


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
        raise ValueError(f"n must be a positive integer (how many results), got {n!r}")


def _pad(ids: list[np.ndarray], scores: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of up to ``n`` results as (rows, n) arrays, padded with ``""`` / ``-inf``."""
    out_ids = np.full((len(ids), n), PAD_ID, dtype=object)
    out_scores = np.full((len(ids), n), -np.inf, dtype=np.float32)
    for row, (row_ids, row_scores) in enumerate(zip(ids, scores, strict=True)):
        out_ids[row, :len(row_ids)] = row_ids
        out_scores[row, :len(row_scores)] = row_scores
    return out_ids, out_scores


