"""Nearest-neighbour indexes over unit item vectors, behind one interface chosen by name.

``exact`` is a batched matmul + top-k (torch, chunked): the ground truth, and the default for
small vocabularies where it is already fast. ``hnsw`` and ``ivf`` are FAISS approximate indexes
(inner product on unit vectors = cosine) for large ones; ``recall_at_k`` measures them against
``exact``. Every backend answers ``search(queries, k) -> (scores, rows)`` with row -1 where fewer
than ``k`` results exist.

``ItemEmbeddings.use_index(name)`` plugs an index in; ``nearest`` and ``recommend_top`` add what
a raw index lacks: filters (over-fetch, then fall back to an exact scan of the allowed items
when a filter is too selective) and exact re-ranking of recommendation candidates by the full
logit, popularity included. ``recommend_top`` serves recommendations only where the model has
no dedicated logit index (``query.recommend_index``, set by ``use_index`` from 50k items).

An index can be stored in the bundle directory (``index-<name>.faiss`` + ``.json``, the FAISS
binary format, no pickle) and is rebuilt on load when the embeddings it was built from changed.
The ``.json`` holds the SHA-256 of the ``.faiss`` file: a damaged or truncated index (or one
stored before checksums, without it) is rebuilt with a warning, never searched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from itemvec.util.errors import ConfigError
from itemvec.util.files import atomic_write_bytes, sha256_file
from itemvec.util.registry import Registry

logger = logging.getLogger(__name__)

AUTO_EXACT_MAX_ITEMS = 50_000  # ``auto`` keeps exact search up to this many items
SELECTIVE_FILTER = 0.02  # filters allowing fewer than this share of items scan them exactly
# Recommendations go through an index only from this many items: below it one exact pass over
# every item costs less than the index's candidate search, and a batch shares the pass
# (benchmarks/serving.md, "Request path, profiled": one query at 100k items, exact 2.1 ms vs
# 2.3 through IVF; at 1M, 16.7 vs 3.3).
INDEX_RECOMMEND_MIN_ITEMS = 200_000
# First candidate set of a recommendation through an index: 200 near + 200 popular items proved
# the answer for none of the random 5-item histories measured at 100k and 1M items, 1600 for all.
RECOMMEND_CANDIDATES = 1600
indexes: Registry = Registry("index backend")


class VectorIndex(Protocol):
    """What every backend provides."""

    name: str
    approximate: bool
    params: dict[str, Any]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), both (len(queries), k), best first; rows are -1 past the end."""
        ...


def as_queries(queries: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))


@indexes.register("exact")
class ExactIndex:
    """Brute force: (B, d) @ (d, N) and top-k, in chunks of queries to bound memory."""

    name = "exact"
    approximate = False

    def __init__(self, vectors: np.ndarray, chunk: int = 256, **params: Any) -> None:
        if params:
            raise ConfigError(f"index exact: unknown parameter {sorted(params)[0]!r}; known: chunk")
        import torch  # the query path stays torch-free until an exact index is asked for

        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with warnings.catch_warnings():  # read-only (memory-mapped) vectors: never written
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            self._matrix = torch.from_numpy(self.vectors)
        self.chunk = int(chunk)
        self.params = {"chunk": self.chunk}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        queries = as_queries(queries)
        k_eff = min(k, len(self.vectors))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        with torch.inference_mode():
            for start in range(0, len(queries), self.chunk):
                block = torch.from_numpy(queries[start:start + self.chunk]) @ self._matrix.T
                values, top = torch.topk(block, k_eff, dim=1, sorted=True)
                scores[start:start + len(block), :k_eff] = values.numpy()
                rows[start:start + len(block), :k_eff] = top.numpy()
        return scores, rows


class _FaissIndex:
    """Shared FAISS plumbing: inner-product metric on unit vectors, -1 rows past the end."""

    approximate = True
    name = "faiss"

    def __init__(self, index: Any, params: dict[str, Any]) -> None:
        self.index = index
        self.params = params

    def _search_params(self, k: int) -> Any:  # per call, so concurrent queries never race
        return None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.index.search(as_queries(queries), int(k),
                                         params=self._search_params(int(k)))
        scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
        return scores, rows.astype(np.int64)

    def to_bytes(self) -> bytes:
        faiss = require_faiss()
        return faiss.serialize_index(self.index).tobytes()


def require_faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("approximate indexes need faiss; install with pip install "
                          "'itemvec[ann]' or use --index exact") from None
    return faiss


def check_params(name: str, given: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"index {name}: unknown parameter {unknown[0]!r}; known: "
                          f"{', '.join(sorted(known))}")
    return {**known, **given}


@indexes.register("hnsw")
class HNSWIndex(_FaissIndex):
    """Graph index: the lowest latency at a given recall; slower to build than IVF."""

    name = "hnsw"
    DEFAULTS = {"M": 32, "ef_construction": 80, "ef_search": 96}

    def __init__(self, vectors: np.ndarray | None = None, index: Any = None, **params: Any) -> None:
        params = check_params("hnsw", params, self.DEFAULTS)
        if index is None:
            faiss = require_faiss()
            vectors = as_queries(vectors)
            index = faiss.IndexHNSWFlat(vectors.shape[1], int(params["M"]),
                                        faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(params["ef_construction"])
            index.add(vectors)
        super().__init__(index, params)

    def _search_params(self, k: int) -> Any:
        return require_faiss().SearchParametersHNSW(efSearch=max(int(self.params["ef_search"]), k))


@indexes.register("ivf")
class IVFIndex(_FaissIndex):
    """Inverted lists around k-means centroids: fast to build, recall set by ``nprobe`` (0: the
    smallest that reaches recall@10 0.99 on sampled items, ``tuned_nprobe``)."""

    name = "ivf"
    DEFAULTS = {"nlist": 0, "nprobe": 0, "train_size": 100_000, "seed": 0}

    def __init__(self, vectors: np.ndarray | None = None, index: Any = None, **params: Any) -> None:
        params = check_params("ivf", params, self.DEFAULTS)
        if index is None:
            faiss = require_faiss()
            vectors = as_queries(vectors)
            n, dim = vectors.shape
            nlist = int(params["nlist"]) or default_nlist(n)
            params["nlist"] = nlist
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = training_rows(n, nlist, int(params["train_size"]), int(params["seed"]))
            index.train(np.ascontiguousarray(vectors[sample]))
            index.add(vectors)
            params["nprobe"] = int(params["nprobe"]) or tuned_nprobe(index, vectors,
                                                                     int(params["seed"]))
        super().__init__(index, params)

    def _search_params(self, k: int) -> Any:
        return require_faiss().SearchParametersIVF(nprobe=probes_for(self.params, k))


def default_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: 4 sqrt(n), with at least 39 vectors a list."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def training_rows(n: int, nlist: int, train_size: int, seed: int) -> np.ndarray:
    """The seeded sample of rows k-means trains on (FAISS wants >= 39 a list)."""
    rng = np.random.default_rng(seed)
    return rng.choice(n, size=min(n, max(train_size, 40 * nlist)), replace=False)


def probes_for(params: dict[str, Any], k: int) -> int:
    """Lists to visit for ``k`` results: ``nprobe`` was chosen for 10, and more results lie
    in more lists, so it grows in proportion to k (similar items ask for 11, ten neighbours
    and the item itself: 17 lists where 15 were tuned, not twice as many), up to nlist/16 (the
    candidates of a recommendation through the index, 1,600 of them, must be the true nearest
    for its bound to hold)."""
    nprobe, nlist = int(params["nprobe"]), int(params["nlist"])
    wider = max(nprobe, nlist // 16)
    return min(nlist, max(nprobe, min(wider, -(-nprobe * k // 10))))


NPROBE_RECALL = 0.99  # recall@10 the automatic nprobe reaches on the items' own neighbours
NPROBE_QUERIES = 256


def tuned_nprobe(index: Any, vectors: np.ndarray, seed: int = 0) -> int:
    """The smallest ``nprobe`` (``doubling_nprobe``) whose recall@10 against exact search,
    with a sample of the items as queries, reaches ``NPROBE_RECALL``. How many lists a query
    must visit depends on how clustered the vectors are: a fixed share either scans far more
    than needed (the search's whole cost) or misses neighbours. A result counts as found when
    its score reaches the exact 10th score, so tied vectors (cold items sharing features)
    do not look like misses."""
    faiss = require_faiss()
    n, nlist = len(vectors), int(index.nlist)
    rng = np.random.default_rng(seed + 1)
    queries = np.ascontiguousarray(vectors[rng.choice(n, size=min(NPROBE_QUERIES, n),
                                                      replace=False)])
    k = min(10, n)
    exact, _ = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    floor = exact[:, -1:] - 1e-5

    def recall_at(nprobe: int) -> float:
        found, _ = index.search(queries, k, params=faiss.SearchParametersIVF(nprobe=nprobe))
        return float((found >= floor).mean())

    nprobe, recall = doubling_nprobe(nlist, recall_at, NPROBE_RECALL)
    logger.info("ivf: nprobe %d of %d lists gives recall@10 %.3f on %d sampled items", nprobe,
                nlist, recall, len(queries))
    return nprobe


def doubling_nprobe(nlist: int, recall_at: Callable[[int], float],
                    target: float) -> tuple[int, float]:
    """The smallest ``nprobe`` whose ``recall_at`` reaches ``target``, and that recall:
    doubling from nlist/256 up to nlist, then bisecting between the last two tried (a search
    costs in proportion to the lists it visits, and doubling alone overshoots by up to 2x;
    recall grows with nprobe, so the bisection finds the smallest)."""
    low, nprobe = 0, max(1, nlist // 256)
    while True:
        recall = recall_at(nprobe)
        if recall >= target or nprobe >= nlist:
            break
        low, nprobe = nprobe, min(nlist, 2 * nprobe)
    if recall < target:
        return nprobe, recall
    while nprobe - low > 1:
        middle = (low + nprobe) // 2
        tried = recall_at(middle)
        if tried >= target:
            nprobe, recall = middle, tried
        else:
            low = middle
    return nprobe, recall


def resolve_backend(name: str, n_items: int) -> str:
    """``auto``: exact search up to ``AUTO_EXACT_MAX_ITEMS`` items, hnsw beyond; else ``name``."""
    if name != "auto":
        return name
    return "exact" if n_items <= AUTO_EXACT_MAX_ITEMS else "hnsw"


def build_index(name: str, vectors: np.ndarray, **params: Any) -> VectorIndex:
    """Build backend ``name`` (``auto``: exact up to 50k items, else hnsw) over ``vectors``."""
    name = resolve_backend(name, len(vectors))
    backend = indexes.get(name)
    began = time.perf_counter()
    index = backend(vectors, **params)
    logger.info("built %s index over %d items in %.1fs", name, len(vectors),
                time.perf_counter() - began)
    return index


# -- persistence ---------------------------------------------------------------------------------
def index_paths(bundle: Path, name: str) -> tuple[Path, Path]:
    """Where index ``name`` of ``bundle`` is stored: its FAISS bytes and its json."""
    return bundle / f"index-{name}.faiss", bundle / f"index-{name}.json"


def bundle_checksums(bundle: Path) -> dict[str, Any]:
    """The manifest's file -> SHA-256 map ({} when it cannot be read): what a stored index
    records to notice that the arrays it was built from changed."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = manifest.get("files") if isinstance(manifest, dict) else None
    return files if isinstance(files, dict) else {}


def embeddings_digest(bundle: Path) -> str | None:
    """One digest of every item's vector as the bundle stores them (None: no manifest)."""
    files = bundle_checksums(bundle)
    vectors, rows = files.get("embeddings.npy"), files.get("vector_rows.npy")
    if vectors is None or rows is None:
        return vectors
    # compact: every item's row comes from both parts, and embed may link embeddings.npy
    # into a bundle whose items point at other rows
    return hashlib.sha256(f"{vectors}:{rows}".encode()).hexdigest()


def save_index(index: VectorIndex, bundle: str | Path) -> Path | None:
    """Store a FAISS index beside the bundle's embeddings (exact needs nothing stored)."""
    if not isinstance(index, _FaissIndex):
        return None
    bundle = Path(bundle)
    meta = {"backend": index.name, "params": index.params, "n_items": int(index.index.ntotal),
            "embeddings_sha256": embeddings_digest(bundle)}
    return store_index(bundle, index.name, index.to_bytes(), meta)


def store_index(bundle: Path, name: str, data: bytes, meta: dict[str, Any]) -> Path:
    """Write ``index-<name>.faiss`` and its ``.json`` (``meta`` plus the bytes' SHA-256, which
    ``read_stored`` checks), each atomically, the data first: a reader that finds the json
    finds the bytes it describes or fails their checksum."""
    data_path, meta_path = index_paths(bundle, name)
    atomic_write_bytes(data_path, data)
    meta = {**meta, "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())
    return data_path


def load_index(bundle: str | Path, vectors: np.ndarray, name: str = "auto", save: bool = False,
               mmap: bool = False, **params: Any) -> VectorIndex:
    """The stored index ``name`` if it matches the bundle's embeddings, else a fresh build
    (``mmap``: a stored index is memory-mapped from its file, see ``read_stored``)."""
    name = resolve_backend(name, len(vectors))
    bundle = Path(bundle)
    data_path, meta_path = index_paths(bundle, name)
    backend = indexes.get(name)
    if issubclass(backend, _FaissIndex) and data_path.is_file() and meta_path.is_file():
        meta = stored_meta(meta_path)
        fresh = (meta.get("embeddings_sha256") == embeddings_digest(bundle)
                 and meta.get("n_items") == len(vectors))
        if fresh and (not params or params == {k: meta["params"].get(k) for k in params}):
            stored = read_stored(data_path, meta, mmap)
            if stored is not None and stored.ntotal == len(vectors):
                logger.info("loaded stored %s index from %s%s", name, data_path,
                            " (memory-mapped)" if mmap else "")
                return backend(index=stored, **{**meta.get("params", {}), **params})
        else:
            logger.info("stored %s index is stale; rebuilding", name)
    index = build_index(name, vectors, **params)
    if save:
        save_index(index, bundle)
    return index


def stored_meta(meta_path: Path) -> dict[str, Any]:
    """A stored index's ``.json`` ({} when unreadable or without its params: stale)."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) and isinstance(meta.get("params"), dict) else {}


def read_stored(data_path: Path, meta: dict[str, Any], mmap: bool = False) -> Any | None:
    """The FAISS index in ``data_path`` if its bytes match the checksum in ``meta``, else None
    with a warning (the caller rebuilds: flipped bytes would silently drop true neighbours).

    ``mmap``: memory-mapped read-only (``IO_FLAG_MMAP_IFC``: IVF maps its inverted lists, HNSW
    its vectors, the HNSW graph is read into memory). ``IO_FLAG_MMAP`` would serve IVF lists
    through FAISS's on-disk lists: ~3x slower searches at 1M items (4.8 vs 1.6 ms a query)."""
    if sha256_file(data_path) != meta.get("sha256"):
        logger.warning("%s: checksum mismatch (damaged, truncated or stored without a "
                       "checksum); rebuilding the index", data_path)
        return None
    faiss = require_faiss()
    try:
        if mmap:
            return faiss.read_index(str(data_path), faiss.IO_FLAG_MMAP_IFC)
        return faiss.deserialize_index(np.frombuffer(data_path.read_bytes(), dtype=np.uint8))
    except RuntimeError as exc:
        logger.warning("%s: unreadable (%s); rebuilding the index", data_path,
                       str(exc).strip().splitlines()[0] if str(exc).strip() else "FAISS error")
        return None


# -- queries with filters ------------------------------------------------------------------------
def _exact_rows(vectors: np.ndarray, query: np.ndarray, n: int, blocked: np.ndarray | None,
                seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-n of one query over the items not blocked or seen (scan of allowed rows only)."""
    allowed = np.ones(len(vectors), dtype=bool) if blocked is None else ~blocked
    allowed[seen] = False
    rows = np.flatnonzero(allowed)
    scores = vectors[rows] @ query
    top = np.argsort(-scores, kind="stable")[:n]
    return rows[top], scores[top].astype(np.float32)


def nearest(index: VectorIndex, vectors: np.ndarray, queries: np.ndarray, n: int,
            blocked: np.ndarray | None, seen: Sequence[np.ndarray],
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Top-n rows and cosines per query, never returning ``blocked`` or the row's ``seen`` items.

    The index is asked for enough extra results to survive the filter; a row that still comes
    up short (or a filter allowing under 2% of items) is answered by an exact scan.
    """
    queries = as_queries(queries)
    total = len(vectors)
    allowed = total if blocked is None else total - int(blocked.sum())
    if allowed < SELECTIVE_FILTER * total:
        pairs = [_exact_rows(vectors, q, n, blocked, s) for q, s in zip(queries, seen, strict=True)]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    most_seen = max((len(s) for s in seen), default=0)
    fetch = min(total, int(math.ceil((n + most_seen) * total / max(allowed, 1) * 1.2)) + 8)
    scores, rows = index.search(queries, fetch)
    out_rows, out_scores = [], []
    for q, (row_scores, row_ids, row_seen) in enumerate(zip(scores, rows, seen, strict=True)):
        keep = row_ids >= 0
        if blocked is not None:
            keep &= ~blocked[np.maximum(row_ids, 0)]
        if len(row_seen) == 1:  # similar items: the query item (np.isin of 19 rows: ~22 us)
            keep &= row_ids != row_seen[0]
        elif len(row_seen):
            keep &= ~np.isin(row_ids, row_seen)
        found, values = row_ids[keep][:n], row_scores[keep][:n]
        available = allowed - len(row_seen)
        if len(found) < min(n, available):
            found, values = _exact_rows(vectors, queries[q], n, blocked, row_seen)
        out_rows.append(found)
        out_scores.append(values.astype(np.float32))
    return out_rows, out_scores


def recommend_top(index: VectorIndex, embeddings: Any, histories: Sequence[np.ndarray], n: int,
                  blocked: np.ndarray | None, seen: Sequence[np.ndarray],
                  candidates: int = RECOMMEND_CANDIDATES, widen: int = 1,
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Recommendations through an index, exact up to the index's recall.

    The logit is ``pooled . v / T + w * bias``. Candidates are the items nearest to the pooled
    history plus the most popular allowed items; any other item has a cosine no higher than the
    last near candidate and a bias no higher than the last popular one, so when the n-th best
    candidate beats that bound the answer is the exact one. Otherwise the candidate set grows
    8-fold ``widen`` times; rows still unproven are scored in full, together
    (``embeddings.top_logits``).
    """
    pooled = embeddings.pool(histories)
    norms = np.linalg.norm(pooled, axis=1)
    unit = pooled / np.maximum(norms, 1e-12)[:, None]
    order = _popularity_order(embeddings)
    out_rows: list[np.ndarray] = [np.zeros(0, np.int64)] * len(seen)
    out_scores: list[np.ndarray] = [np.zeros(0, np.float32)] * len(seen)
    unproven = []
    for h, history_seen in enumerate(seen):
        fetch = min(len(embeddings), max(candidates, 4 * n))
        for _ in range(widen + 1):
            found = _proven(index, embeddings, unit[h], pooled[h], float(norms[h]), n, fetch,
                            blocked, history_seen, order)
            if found is not None or fetch >= len(embeddings):
                break
            fetch = min(len(embeddings), fetch * 8)
        if found is None:
            unproven.append(h)
        else:
            out_rows[h], out_scores[h] = found[0], np.asarray(found[1], dtype=np.float32)
    if unproven:
        rows, scores = embeddings.top_logits(pooled[unproven], n, blocked,
                                             [seen[h] for h in unproven])
        for h, found_rows, found_scores in zip(unproven, rows, scores, strict=True):
            out_rows[h], out_scores[h] = found_rows, found_scores
    return out_rows, out_scores


def _proven(index: VectorIndex, embeddings: Any, unit: np.ndarray, pooled: np.ndarray,
            norm: float, n: int, fetch: int, blocked: np.ndarray | None, seen: np.ndarray,
            order: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The top-n among ``fetch`` near and ``fetch`` popular candidates when the bound proves
    them exact, else None."""
    weight, temperature = embeddings.query.popularity_weight, embeddings.temperature
    near_rows, near_scores = nearest(index, embeddings.vectors, unit[None, :], fetch, blocked,
                                     [seen])
    popular = _first_allowed(order, fetch, blocked, seen)
    rows = np.union1d(near_rows[0], popular) if norm > 0 else popular
    logits = embeddings.vectors[rows] @ pooled / temperature
    logits = logits + weight * embeddings.item_bias[rows]
    top = np.argsort(-logits, kind="stable")[:n]
    if norm == 0 or _bound_holds(logits[top], n, near_scores[0], norm, temperature, weight,
                                 embeddings.item_bias, popular, fetch):
        return rows[top], logits[top]
    return None


def _popularity_order(embeddings: Any) -> np.ndarray:
    """Rows by descending learned popularity, computed once per embeddings object."""
    cached = embeddings.__dict__.get("_popularity_order")
    if cached is None or len(cached) != len(embeddings):
        cached = np.argsort(-embeddings.item_bias, kind="stable")
        if len(cached) < 2 ** 31:  # half the memory a server process holds for it
            cached = cached.astype(np.int32)
        embeddings.__dict__["_popularity_order"] = cached
    return cached


def _first_allowed(order: np.ndarray, k: int, blocked: np.ndarray | None,
                   seen: np.ndarray) -> np.ndarray:
    """The first ``k`` rows of ``order`` that are neither blocked nor seen."""
    taken, start, step = [], 0, 2 * k + len(seen)
    while start < len(order) and sum(len(t) for t in taken) < k:
        chunk = order[start:start + step]
        ok = ~np.isin(chunk, seen) if len(seen) else np.ones(len(chunk), bool)
        if blocked is not None:
            ok &= ~blocked[chunk]
        taken.append(chunk[ok])
        start += step
        step *= 4
    return np.concatenate(taken)[:k] if taken else np.zeros(0, np.int64)


def _bound_holds(best: np.ndarray, n: int, near_scores: np.ndarray, norm: float,
                 temperature: float, weight: float, bias: np.ndarray, popular: np.ndarray,
                 fetch: int) -> bool:
    """Can an item outside the candidates still beat the n-th best candidate?"""
    if len(best) < n:
        return False
    cos_floor = float(near_scores[-1]) if len(near_scores) >= fetch else -np.inf
    bias_floor = float(bias[popular[-1]]) if len(popular) >= fetch else -np.inf
    if not np.isfinite(cos_floor) and not np.isfinite(bias_floor):
        return True  # every allowed item is a candidate already
    bound = cos_floor * norm / temperature + weight * bias_floor
    return bool(best[-1] >= bound)


# -- measurement ---------------------------------------------------------------------------------
def recall_at_k(index: VectorIndex, vectors: np.ndarray, queries: np.ndarray, k: int = 10,
                truth: np.ndarray | None = None) -> float:
    """Share of the exact top-k that the index also returns in its top-k (averaged)."""
    if truth is None:
        _, truth = ExactIndex(vectors).search(queries, k)
    _, found = index.search(queries, k)
    hits = [len(np.intersect1d(a[a >= 0], b[b >= 0])) for a, b in zip(truth, found, strict=True)]
    return float(np.sum(hits) / max(1, np.sum(truth >= 0)))
