"""A maximum-inner-product index that answers the recommendation logit itself.

The logit of item x for a pooled history p is ``p . v_x / T + w * bias_x``. Every item is stored
as ``[v_x, s * bias_x]`` (``s = w0 * T``, w0 the popularity weight at build time) and a query as
``[p / T, w / s]``: their inner product is the logit for any later w, so one FAISS IVF search
over the augmented rows (half precision, zero-padded to a multiple of 8 values: half the memory
read per query of float32 rows, and SIMD scans) ranks items by the logit, where the
similar-items index ranks them by cosine and needs ~1,600 candidates to prove a
recommendation (``index.recommend_top``).

IVF alone misses popular items whose vectors lie far from the query (the bias lifts them: at 1M
items recall@10 stalled at 0.96), so the ``P`` most popular items (``popular_count``) are
scored as well, in one matrix product per batch: those whose logit can reach the n-th best of
the query's IVF rows (that row's half-precision score less its error bound) join the
candidates, all of them, or the best ``n + seen + SLACK`` where more can. The union is scored
again by ``exact.fixed_logits``: the logits returned are the exact ones, the same bits whether
a query comes alone or in a batch (FAISS gets at most ``SEARCH_GROUP`` queries at a time: from
20 on its coarse quantizer uses BLAS, whose rounding depends on the batch; a popular item near
the floor may come or go with the batch's rounding, but sits below n candidates either way).
``nprobe`` is tuned at build time, as ``tuned_nprobe`` does for the similar index, to the
smallest that reaches recall@10 0.99 against exact on sampled histories.

A filter (``blocked``) leaves fewer allowed items in each list: the search visits more
lists and fetches more candidates, both in proportion to the blocked share.

Whatever the index cannot answer well goes to the exact scan (``exact.logit_top``): more than
``MAX_RESULTS`` results, a filter allowing under 2% of items, a row that comes up short after
filtering, an empty history when the popularity weight is not positive.

Stored beside the bundle as ``index-recommend.faiss`` + ``.json`` (the FAISS binary format), with
the digests of the vectors and biases, the temperature and popularity weight it was built for;
a stale or damaged one is rebuilt, never searched.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from itemvec.query.exact import (
    fixed_logits_block,
    largest_norm,
    logit_top,
    top_positions_rows,
)
from itemvec.query.index import (
    SELECTIVE_FILTER,
    bundle_checksums,
    check_params,
    default_nlist,
    doubling_nprobe,
    embeddings_digest,
    index_paths,
    read_stored,
    require_faiss,
    store_index,
    stored_meta,
    training_rows,
)

logger = logging.getLogger(__name__)

NAME = "recommend"
RECOMMEND_INDEX_MIN_ITEMS = 50_000  # below it one exact pass costs about what a search does
MAX_RESULTS = 200  # more results than this: the exact scan
SEARCH_GROUP = 16  # FAISS scores its coarse quantizer with BLAS from 20 queries on
SLACK = 16  # candidates fetched past n + seen items from each source
TARGET_RECALL = 0.99
TUNING_HISTORIES = 1024  # 256 put the threshold within noise: 0.985 on unseen histories at 1M
HISTORY_LENGTH = 5
SCORE_TOLERANCE = 1e-4  # a result counts as found when its logit reaches the exact 10th less this
ADD_BLOCK = 65_536  # augmented rows built and added at a time (no second full copy)
HALF_ERROR = 2.0 ** -9  # half-precision rows: |q . x16 - q . x| <= 2^-11 |q||x|; 4x room
SEEN_BROADCAST = 32  # histories up to this long are matched against candidates in one pass
BLOCK_VALUES = 1 << 22  # candidate vector values gathered at a time (16 MiB of float32)

Pool = Callable[[Sequence[np.ndarray]], np.ndarray]  # histories (rows) -> pooled vectors


def popular_count(n: int) -> int:
    """Popular items scored exactly on every query: 0.8% of a large catalogue, at least 1,000
    (at 1M items IVF plus the top 8,000 reached recall@10 0.992, plus 2,000 only 0.977)."""
    return min(n, max(1000, n // 125))


class RecommendIndex:
    """IVF over ``[v, s * bias]`` plus the ``popular`` items by bias, rescored exactly."""

    name = NAME
    approximate = True
    DEFAULTS = {"nlist": 0, "nprobe": 0, "popular": 0, "scale": 0.0, "train_size": 100_000,
                "seed": 0}

    def __init__(self, vectors: np.ndarray, bias: np.ndarray, temperature: float,
                 weight: float, index: Any, params: dict[str, Any]) -> None:
        self.vectors = vectors  # the model's own (perhaps memory-mapped) rows: never copied
        self.bias = np.asarray(bias, dtype=np.float32)
        self.temperature, self.weight = float(temperature), float(weight)
        self.index, self.params = index, params
        order = np.argsort(-self.bias, kind="stable")[:int(params["popular"])]
        self.popular = order.astype(np.int64)
        self.popular_vectors = np.ascontiguousarray(vectors[self.popular], dtype=np.float32)
        self.popular_bias = self.bias[self.popular]
        scale = float(params.get("scale") or 0.0)  # the largest stored row's norm, as a bound
        self.row_bound = largest_norm(vectors) + scale * float(np.abs(self.bias).max(initial=0))
        self._probes: dict[int, Any] = {}  # nprobe -> FAISS search parameters, only ever read

    def __len__(self) -> int:
        return len(self.bias)

    def search(self, pooled: np.ndarray, n: int, blocked: np.ndarray | None,
               seen: Sequence[np.ndarray], weight: float | None = None,
               nprobe: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Top-n rows and exact logits per pooled history, never ``blocked`` items nor the
        row's ``seen`` ones (the contract of ``ItemEmbeddings.top_logits``); ``weight``: the
        popularity weight to rank with (default: the one built for)."""
        weight = self.weight if weight is None else float(weight)
        queries = np.asarray(pooled / np.float32(self.temperature), dtype=np.float32)
        total = len(self)
        allowed = total if blocked is None else total - int(blocked.sum())
        if n > MAX_RESULTS or allowed < SELECTIVE_FILTER * total:
            return logit_top(self.vectors, self.bias, weight, queries, n, blocked, seen)
        most_seen = max((len(s) for s in seen), default=0)
        def widened(count: int) -> int:  # a filter leaves fewer allowed items in each list:
            return math.ceil(count * total / max(allowed, 1))  # fetch and visit more, in step

        fetch = min(total, widened(n + most_seen + SLACK))
        nprobe = min(int(self.params["nlist"]), widened(int(nprobe or self.params["nprobe"])))
        found, approximate, norms = self._candidates(queries, fetch, weight, nprobe)
        floors = self._floors(found, approximate, norms, blocked, seen, n)
        prior = np.float32(weight) * self.popular_bias  # the popular items' bias term, once
        if blocked is not None:
            prior[blocked[self.popular]] = -np.inf
        rows: list[np.ndarray] = []
        logits: list[np.ndarray] = []
        group = max(1, BLOCK_VALUES // ((fetch + min(fetch, len(prior))) * queries.shape[1]))
        for start in range(0, len(queries), group):
            part = slice(start, start + group)
            block_rows, block_logits = self._ranked(queries[part], found[part], floors[part],
                                                    fetch, prior, np.float32(weight), blocked,
                                                    seen[part], n)
            rows += block_rows
            logits += block_logits
        short = [q for q, (found_rows, query) in enumerate(zip(rows, queries, strict=True))
                 if (weight <= 0 and not query.any())  # no vector to search, no popularity
                 or (len(found_rows) < n
                     and len(found_rows) < allowed - _allowed_count(seen[q], blocked))]
        if short:
            exact = logit_top(self.vectors, self.bias, weight, queries[short], n, blocked,
                              [seen[q] for q in short])
            for q, found_rows, found_logits in zip(short, *exact, strict=True):
                rows[q], logits[q] = found_rows, found_logits
        return rows, logits

    def _candidates(self, queries: np.ndarray, fetch: int, weight: float, nprobe: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(queries, fetch) rows from the IVF search of the augmented queries (-1 past the end)
        and their half-precision scores, searched ``SEARCH_GROUP`` at a time so that a query
        finds the same in any batch; and each augmented query's norm."""
        augmented = np.zeros((len(queries), stored_width(queries.shape[1])), dtype=np.float32)
        augmented[:, :queries.shape[1]] = queries
        augmented[:, queries.shape[1]] = weight / float(self.params["scale"])
        params = self._probes.get(nprobe)
        if params is None:  # ~15 us to make: once per nprobe (searches only read it)
            params = self._probes[nprobe] = require_faiss().SearchParametersIVF(nprobe=nprobe)
        found = np.empty((len(queries), fetch), dtype=np.int64)
        scores = np.empty((len(queries), fetch), dtype=np.float32)
        for start in range(0, len(queries), SEARCH_GROUP):
            group = augmented[start:start + SEARCH_GROUP]
            scores[start:start + len(group)], found[start:start + len(group)] = \
                self.index.search(group, fetch, params=params)
        return found, scores, np.linalg.norm(augmented, axis=1)

    def _ranked(self, queries: np.ndarray, found: np.ndarray, floors: np.ndarray, fetch: int,
                prior: np.ndarray, weight: np.float32, blocked: np.ndarray | None,
                seen: Sequence[np.ndarray], n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per query, the top-n of its IVF rows and of the popular items that can reach them
        (``_popular_rows``) by exact logit (``fixed_logits_block``), blocked and seen rows left
        out. Candidates are sorted by row and duplicates dropped, so ties go to the lower row
        as in the exact scan."""
        popular = self._popular_rows(queries, floors, fetch, prior)
        candidates = np.concatenate([found, popular], axis=1)
        candidates.sort(axis=1)
        invalid = candidates < 0  # FAISS pads with -1
        invalid[:, 1:] |= candidates[:, 1:] == candidates[:, :-1]
        if blocked is not None:
            invalid |= blocked[np.maximum(candidates, 0)]
        invalid |= _seen_mask(candidates, seen)
        safe = np.where(invalid, 0, candidates)
        values = fixed_logits_block(self.vectors, self.bias, weight, queries, safe)
        values[invalid] = -np.inf
        best = top_positions_rows(values, n)
        return ([c[b] for c, b in zip(candidates, best, strict=True)],
                [v[b].astype(np.float32) for v, b in zip(values, best, strict=True)])

    def _floors(self, found: np.ndarray, approximate: np.ndarray, norms: np.ndarray,
                blocked: np.ndarray | None, seen: Sequence[np.ndarray], n: int) -> np.ndarray:
        """Per query, a logit every item of its exact top n reaches: the half-precision score
        of its (n + seen)-th IVF row (rows come best first; at least n of those above are
        neither seen nor, without a filter, anything else left out) less that score's error
        bound; -inf where there are not enough rows. With a filter: the n-th allowed row."""
        depth = np.asarray([n + len(rows) for rows in seen], dtype=np.int64)
        if blocked is not None:  # count the allowed rows instead
            if int(depth.max(initial=0)) - n > SEEN_BROADCAST:
                return np.full(len(found), -np.inf, dtype=np.float32)
            allowed = (found >= 0) & ~_seen_mask(found, seen) & ~blocked[np.maximum(found, 0)]
            ranks = np.cumsum(allowed, axis=1)
            depth = np.where(ranks[:, -1] >= n, np.argmax(ranks >= n, axis=1) + 1,
                             found.shape[1] + 1)
        at = np.minimum(depth, found.shape[1]) - 1
        row = np.arange(len(found))
        usable = (depth <= found.shape[1]) & (found[row, at] >= 0)
        error = norms * (self.row_bound * HALF_ERROR + 1e-6)  # >= |q . x16 - q . x|, with room
        return np.where(usable, approximate[row, at] - error, -np.inf).astype(np.float32)

    def _popular_rows(self, queries: np.ndarray, floors: np.ndarray, fetch: int,
                      prior: np.ndarray) -> np.ndarray:
        """(queries, width) popular rows, -1 padded: those whose logit can reach the query's
        floor (every one of them, so ties cannot split), or the best ``fetch`` by
        approximate logit where more than ``fetch`` can (``_popular_best``)."""
        scores = queries @ self.popular_vectors.T
        scores += prior
        hits = np.flatnonzero(scores >= floors[:, None])  # few: flat, not per row (~20x faster)
        which, column = np.divmod(hits, scores.shape[1])
        counts = np.bincount(which, minlength=len(queries))
        crowded = counts > fetch
        width = max(int(counts[~crowded].max(initial=0)), fetch if crowded.any() else 1)
        out = np.full((len(queries), width), -1, dtype=np.int64)
        kept = ~crowded[which]  # hits come in row order: place each at its rank in its row
        place = np.arange(len(hits)) - (np.cumsum(counts) - counts)[which]
        out[which[kept], place[kept]] = self.popular[column[kept]]
        if crowded.any():
            out[crowded, :fetch] = self._popular_best(scores[crowded], fetch)
        return out

    def _popular_best(self, scores: np.ndarray, fetch: int) -> np.ndarray:
        """(queries, min(fetch, P)) rows of the best popular items by approximate logit
        (``scores``: one matrix product for the batch reads the popular block once; a product
        per query read it per query: ~60 of ~250 us a query at 1M items). Its rounding may
        differ from a query alone, which can only swap items at the ``fetch`` boundary,
        ``SLACK`` places below the n results; the answer is ranked by ``fixed_logits_block``'s
        exact logits, the same bits in any batch."""
        if fetch >= scores.shape[1]:
            return np.broadcast_to(self.popular, scores.shape)
        keep = scores.shape[1] - fetch
        picked = np.argpartition(scores, keep, axis=1)[:, keep:]
        cut = np.take_along_axis(scores, picked[:, :1], axis=1)
        tied = scores == cut
        if np.count_nonzero(tied) > len(scores):  # argpartition picks any of a tie at the cut:
            for q in np.flatnonzero(tied.sum(axis=1) > 1):  # take it by position (bias, then
                above = np.flatnonzero(scores[q] > cut[q])  # row) as the exact scan ranks it
                best = np.concatenate([above, np.flatnonzero(tied[q])[:fetch - len(above)]])
                picked[q, :len(best)] = best  # (fewer only past NaN scores: duplicates then)
        return self.popular[picked]

    def recall(self, pooled: np.ndarray, histories: Sequence[np.ndarray],
               nprobe: int | None = None, floor: np.ndarray | None = None, k: int = 10) -> float:
        """Mean share of the top-k found, counting a result when its logit reaches the exact
        k-th logit (less ``SCORE_TOLERANCE``): tied items are not misses."""
        if floor is None:
            floor = self.exact_floor(pooled, histories, k)
        _, logits = self.search(pooled, k, None, histories, nprobe=nprobe)
        hits = [np.sum(found >= least) / k for found, least in zip(logits, floor, strict=True)]
        return float(np.mean(hits))

    def exact_floor(self, pooled: np.ndarray, histories: Sequence[np.ndarray],
                    k: int = 10) -> np.ndarray:
        """Per history, the exact k-th best logit less the tolerance (history items excluded)."""
        queries = np.asarray(pooled / np.float32(self.temperature), dtype=np.float32)
        _, logits = logit_top(self.vectors, self.bias, self.weight, queries, k, None, histories)
        return np.asarray([row[-1] - SCORE_TOLERANCE if len(row) else -np.inf
                           for row in logits], dtype=np.float64)

    def tune(self, pool: Pool) -> int:
        """The smallest ``nprobe`` (``doubling_nprobe``) reaching ``TARGET_RECALL``."""
        histories = sampled_histories(len(self), int(self.params["seed"]))
        pooled = pool(histories)
        floor = self.exact_floor(pooled, histories)
        nlist = int(self.params["nlist"])
        nprobe, recall = doubling_nprobe(
            nlist, lambda probes: self.recall(pooled, histories, probes, floor), TARGET_RECALL)
        logger.info("recommend index: nprobe %d of %d lists + %d popular items give recall@10 "
                    "%.3f on %d sampled histories", nprobe, nlist, len(self.popular), recall,
                    len(histories))
        return nprobe

    def to_bytes(self) -> bytes:
        return require_faiss().serialize_index(self.index).tobytes()


def _seen_mask(candidates: np.ndarray, seen: Sequence[np.ndarray]) -> np.ndarray:
    """(queries, candidates) True where a candidate is one of its query's ``seen`` rows: one
    broadcast comparison for short histories, a binary search per query for long ones."""
    longest = max((len(rows) for rows in seen), default=0)
    if longest <= SEEN_BROADCAST:
        padded = np.full((len(seen), max(longest, 1)), -2, dtype=np.int64)  # -2: no row
        for q, rows in enumerate(seen):
            padded[q, :len(rows)] = rows
        return (candidates[:, :, None] == padded[:, None, :]).any(axis=2)
    mask = np.zeros(candidates.shape, dtype=bool)
    for q, rows in enumerate(seen):  # candidates are sorted: search them, not np.isin
        if len(rows):
            at = np.minimum(np.searchsorted(candidates[q], rows), candidates.shape[1] - 1)
            mask[q, at[candidates[q, at] == rows]] = True
    return mask


def _allowed_count(rows: np.ndarray, blocked: np.ndarray | None) -> int:
    """How many distinct ``rows`` the filter allows (seen items a filter already removed do
    not count twice)."""
    rows = np.unique(rows)
    return len(rows) if blocked is None else int(len(rows) - blocked[rows].sum())


def sampled_histories(n: int, seed: int = 0, count: int = TUNING_HISTORIES,
                      length: int = HISTORY_LENGTH) -> list[np.ndarray]:
    """Seeded random histories of ``length`` distinct rows (the tuning and recall sample)."""
    rng = np.random.default_rng(seed + 2)
    return [rng.choice(n, size=min(length, n), replace=False) for _ in range(count)]


def build_recommend_index(vectors: np.ndarray, bias: np.ndarray, temperature: float,
                          weight: float, pool: Pool, **params: Any) -> RecommendIndex:
    """Train and fill the IVF over augmented rows, then tune ``nprobe`` (unless given) with
    histories pooled by ``pool``."""
    params = check_params(NAME, params, RecommendIndex.DEFAULTS)
    faiss = require_faiss()
    began = time.perf_counter()
    n, dim = vectors.shape
    bias = np.asarray(bias, dtype=np.float32)
    nlist = int(params["nlist"]) or default_nlist(n)
    scale = float(params["scale"]) or (weight * temperature if weight else temperature)
    params.update(nlist=nlist, scale=scale, popular=int(params["popular"]) or popular_count(n))
    width = stored_width(dim)
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(width), width, nlist,
                                          faiss.ScalarQuantizer.QT_fp16,
                                          faiss.METRIC_INNER_PRODUCT)
    index.by_residual = False  # the codes are the rows themselves: scores are q . x
    sample = training_rows(n, nlist, int(params["train_size"]), int(params["seed"]))
    index.train(augmented_rows(vectors, bias, scale, sample))
    for start in range(0, n, ADD_BLOCK):
        index.add(augmented_rows(vectors, bias, scale, np.arange(start, min(n, start + ADD_BLOCK))))
    built = RecommendIndex(vectors, bias, temperature, weight, index, params)
    if not params["nprobe"]:
        params["nprobe"] = built.tune(pool)
    logger.info("built the recommend index over %d items in %.1fs", n, time.perf_counter() - began)
    return built


def augmented_rows(vectors: np.ndarray, bias: np.ndarray, scale: float,
                   rows: np.ndarray) -> np.ndarray:
    """``[v, scale * bias, 0...]`` of ``rows``: inner product with ``[q, w / scale, 0...]`` is
    the logit (zeros pad the row to ``stored_width``)."""
    dim = vectors.shape[1]
    out = np.zeros((len(rows), stored_width(dim)), dtype=np.float32)
    out[:, :dim] = vectors[rows]
    out[:, dim] = np.float32(scale) * bias[rows]
    return out


def stored_width(dim: int) -> int:
    """Values stored per item: the vector, its scaled bias, zeros up to a multiple of 8 (FAISS
    scans half-precision codes with SIMD only at such widths: 4x faster than at 65)."""
    return -(-(dim + 1) // 8) * 8


# -- persistence ---------------------------------------------------------------------------------
def save_recommend_index(index: RecommendIndex, bundle: str | Path) -> Path:
    """Store the index beside the bundle with what it was built from."""
    bundle = Path(bundle)
    meta = {"backend": NAME, "params": index.params, "n_items": len(index),
            "embeddings_sha256": embeddings_digest(bundle),
            "item_bias_sha256": bundle_checksums(bundle).get("item_bias.npy"),
            "temperature": index.temperature, "popularity_weight": index.weight}
    return store_index(bundle, NAME, index.to_bytes(), meta)


def load_recommend_index(bundle: str | Path, vectors: np.ndarray, bias: np.ndarray,
                         temperature: float, weight: float, pool: Pool, save: bool = False,
                         mmap: bool = False, **params: Any) -> RecommendIndex:
    """The stored index if it was built from these vectors, biases, temperature and popularity
    weight (``mmap``: its inverted lists memory-mapped, shared by every worker through the
    page cache), else a fresh build (stored when ``save``)."""
    bundle = Path(bundle)
    data_path, meta_path = index_paths(bundle, NAME)
    if data_path.is_file() and meta_path.is_file():
        meta = stored_meta(meta_path)
        if _fresh(meta, bundle, len(vectors), temperature, weight, params):
            stored = read_stored(data_path, meta, mmap)
            if stored is not None and stored.ntotal == len(vectors) \
                    and stored.d == stored_width(vectors.shape[1]):
                logger.info("loaded stored recommend index from %s%s", data_path,
                            " (memory-mapped)" if mmap else "")
                return RecommendIndex(vectors, bias, temperature, weight, stored,
                                      {**meta["params"], **params})
        else:
            logger.info("stored recommend index is stale; rebuilding")
    elif not save:  # every serving worker builds its own copy: seconds to a minute at 1M items
        logger.info("%s has no stored recommend index; building one (store it with "
                    "`itemvec index %s`)", bundle, bundle)
    built = build_recommend_index(vectors, bias, temperature, weight, pool, **params)
    if save:
        save_recommend_index(built, bundle)
    return built


def _fresh(meta: dict[str, Any], bundle: Path, n: int, temperature: float, weight: float,
           params: dict[str, Any]) -> bool:
    """Whether a stored index's json matches these embeddings (both digests known and equal)."""
    digest = embeddings_digest(bundle)
    bias_digest = bundle_checksums(bundle).get("item_bias.npy")
    return (digest is not None and bias_digest is not None
            and meta.get("embeddings_sha256") == digest
            and meta.get("item_bias_sha256") == bias_digest
            and meta.get("n_items") == n and meta.get("temperature") == float(temperature)
            and meta.get("popularity_weight") == float(weight)
            and all(meta["params"].get(k) == v for k, v in params.items()))
