"""The served model and its atomic replacement.

``LoadedModel`` bundles everything a request needs (embeddings with their index, search,
explainer); it is built completely before ``ModelHolder`` swaps the one reference requests read.
A request takes ``holder.current()`` once and uses that object to the end, so a reload never
mixes two models in one answer and never drops a request. Reload paths must resolve (symlinks
included) to a directory under the configured models root. A reload that fails for any reason
keeps the previous model serving; a failed background reload (SIGHUP, ``--watch``) is kept in
``holder.failure`` for ``/health`` until a reload succeeds. Text a client sees names bundles
relative to the models root, never by absolute path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from itemvec.query.embeddings import ItemEmbeddings, load_embeddings
from itemvec.query.explain import Explainer, explainer_for_bundle
from itemvec.query.labels import item_labels, label_column, labelled_explanations, table_rows
from itemvec.query.search import ItemSearch, item_filter
from itemvec.util.errors import BundleError, ItemvecError
from itemvec.util.files import file_signature
from itemvec.util.process import THREAD_ENV, release_freed_memory

logger = logging.getLogger(__name__)

MIN_WATCH_INTERVAL = 0.1  # seconds; polling faster only burns CPU
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:/[^\s/'\":,]+)+/([^\s/'\":,]+)")


class NotReady(Exception):
    """No model has been loaded yet."""


@dataclass
class LoadedModel:
    path: Path
    embeddings: ItemEmbeddings
    search: ItemSearch
    explainer: Explainer
    index_name: str
    loaded_at: float = field(default_factory=time.time)
    label: str | None = None  # item-table column labelling results (None: no labels)

    def __post_init__(self) -> None:
        # A closure over the embeddings, not a bound method: no reference cycle, so a replaced
        # model is freed at once rather than at the next full garbage collection.
        embeddings = self.embeddings

        def where_mask(where: tuple[tuple[str, tuple[str, ...]], ...]) -> np.ndarray:
            return item_filter(embeddings, {k: list(v) for k, v in where})

        self._where = lru_cache(maxsize=256)(where_mask)
        if self.label is not None and embeddings.item_table is not None:
            table_rows(embeddings)  # at load, not in the first request after it

    def info(self) -> dict[str, Any]:
        meta = self.embeddings.metadata
        stats = {k: v for k, v in (meta.get("stats") or {}).items() if k != "history"}
        table = self.embeddings.item_table
        return {"bundle": self.path.name, "items": len(self.embeddings),
                "dim": self.embeddings.dim, "created": meta.get("created"),
                "itemvec_version": meta.get("itemvec_version"),
                "format_version": meta.get("format_version"), "index": self.index_name,
                "text_search": self.search.has_text,
                "item_columns": [] if table is None else
                [c for c in table.columns if c != "item_id"],
                "min_support": self.explainer.min_support,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
                "config": without_paths(meta.get("config")), "stats": without_paths(stats)}

    def marks(self, ids: Any) -> dict[str, list]:
        """Lists parallel to result ``ids``: ``cold`` (no behaviour, placed by features) and,
        when the item table has a label column, ``labels``."""
        ids = [str(i) for i in ids]
        out: dict[str, list] = {"cold": self.embeddings.is_cold(np.asarray(ids, object)).tolist()}
        labels = item_labels(self.embeddings, ids, self.label)
        if labels is not None:
            out["labels"] = labels
        return out

    def labelled(self, explanations: list[dict]) -> list[dict]:
        """Explanations with a ``label`` beside each item id (when items have labels)."""
        return labelled_explanations(explanations, self.embeddings, self.label)

    def filters(self, exclude: list[str] | None = None, where: dict[str, Any] | None = None,
                allowed: list[str] | None = None) -> dict[str, Any]:
        """Keyword arguments (filter, exclude) for the ``similar_items*`` / ``recommend*`` calls."""
        mask = None
        if where:
            key = tuple(sorted((k, tuple(str(x) for x in (v if isinstance(v, list) else [v])))
                               for k, v in where.items()))
            mask = self._where(key)
        if allowed is not None:
            keep = item_filter(self.embeddings, allowed=allowed)
            mask = keep if mask is None else mask & keep
        out: dict[str, Any] = {}
        if mask is not None:
            out["filter"] = mask
        if exclude:
            out["exclude"] = exclude
        return out


def without_paths(value: Any) -> Any:
    """``value`` with every absolute path string cut to its last part (``stats.source``):
    a client learns file names, not the server's directory layout."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~")) or re.match(r"[A-Za-z]:\\", value)):
        return re.split(r"[/\\]", value.rstrip("/\\"))[-1]
    return value


def load_model(path: str | Path, index: str = "auto", check: bool = True, mmap: bool = False,
               mapped_cache: Path | None = None, label: str | None = None) -> LoadedModel:
    """Read a bundle and build everything a request could need (not the lazy text encoder).

    ``mmap``: vectors, logits and a stored index are memory-mapped read-only from the bundle
    files; the item ids and the co-occurrence matrix from parts written once under
    ``mapped_cache`` (``store.mapped``). ``label``: the item-table column that labels results
    (``serve --label``; default detected, ``none`` for no labels).
    """
    path = Path(path)
    began = time.perf_counter()
    embeddings = load_embeddings(path, check=check, mmap=mmap,
                                 mapped_cache=mapped_cache if mmap else None)
    if index != "none":
        embeddings.use_index(index, bundle=path, mmap=mmap)
    name = "exact-matmul" if embeddings.vector_index is None else embeddings.vector_index.name
    model = LoadedModel(path, embeddings, ItemSearch(embeddings),
                        explainer_for_bundle(embeddings, path, mapped_cache if mmap else None),
                        name, label=label_column(embeddings, label))
    logger.info("loaded %s: %d items, index %s, in %.2fs", path, len(embeddings), name,
                time.perf_counter() - began)
    return model


def bundle_version(model: LoadedModel) -> str:
    """A short digest of the bundle's file checksums: equal versions serve equal files."""
    files = json.dumps(model.embeddings.metadata.get("files", {}), sort_keys=True)
    return hashlib.sha256(files.encode()).hexdigest()[:12]


_thread_limit: dict[str, int] = {"threads": 1}
_capped = threading.local()


def limit_threads(threads: int) -> None:
    """One BLAS/OpenMP/torch thread per query by default: a server gets its parallelism from
    concurrent requests, and nested thread pools on few cores stall each other (a 0.1 ms
    matmul took 30 ms on a loaded 2-core machine with the default pools).

    OpenMP limits set by a call (``omp_set_num_threads``, threadpoolctl) bind only the calling
    thread; request threads start from the library's default, which it reads from
    ``OMP_NUM_THREADS`` when it loads. So the variables are set here, before FAISS or torch is
    imported, the libraries already loaded are capped for this thread, torch's own setting
    (process-wide) is made when torch is loaded, and ``cap_this_thread`` caps a request
    thread for libraries loaded before this call.
    """
    _thread_limit["threads"] = int(threads)
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    _limit(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    _capped.threads = threads


def cap_this_thread() -> None:
    """Cap the calling thread's OpenMP/BLAS pools at ``limit_threads``' count, once per thread
    (threadpoolctl inspects every loaded library; later calls only read a thread-local)."""
    threads = _thread_limit["threads"]
    if getattr(_capped, "threads", None) != threads:
        _limit(threads)
        _capped.threads = threads


def _limit(threads: int) -> None:
    """threadpoolctl's limit for the calling thread; where it cannot set one (an unusual BLAS
    or libc) the thread runs uncapped rather than failing the request (logged once)."""
    try:
        threadpool_limits(threads)
    except Exception:
        if not _thread_limit.get("warned"):
            _thread_limit["warned"] = True
            logger.warning("cannot limit BLAS/OpenMP threads; running uncapped", exc_info=True)


def resolve_under(root: Path, candidate: str | Path) -> Path:
    """``candidate`` (relative to ``root`` or absolute) if it resolves inside ``root``."""
    root = Path(root).resolve()
    target = (root / candidate).resolve()
    if target != root and root not in target.parents:
        raise ItemvecError(f"bundle path {str(candidate)!r} is outside the models root")
    return target


class ModelHolder:
    """Owns the current model; ``reload`` builds a new one aside, then swaps one reference."""

    def __init__(self, path: str | Path, models_root: str | Path | None = None,
                 index: str = "auto", label: str | None = None) -> None:
        self.path = Path(path).resolve()
        self.label = label
        self.root = Path(models_root).resolve() if models_root else self.path.parent
        self.index = index
        self._model: LoadedModel | None = None
        self._lock = threading.Lock()
        self.reloads = 0
        self.failure: str | None = None  # the last background reload's error, until one works

    def current(self) -> LoadedModel:
        model = self._model
        if model is None:
            raise NotReady()
        return model

    @property
    def ready(self) -> bool:
        return self._model is not None

    def load(self) -> LoadedModel:
        return self.reload()

    def public(self, text: str) -> str:
        """``text`` fit for a client: paths under the models root made relative, other
        absolute paths cut to their last part."""
        text = text.replace(str(self.root) + os.sep, "")
        return _ABSOLUTE_PATH.sub(r"\1", text)

    def reload(self, path: str | Path | None = None) -> LoadedModel:
        """Load ``path`` (default: the current bundle path) fully, then swap it in.

        A client's ``path`` that holds no bundle gets one message whether or not the directory
        exists, so reloads cannot probe the file system. Any failure raises ``ItemvecError``
        and leaves the current model serving.
        """
        target = self.path if path is None else self._client_target(path)
        with self._lock:
            return self._install(target)

    def _install(self, target: Path) -> LoadedModel:
        """Build ``target`` and swap it in; the caller holds ``_lock``."""
        model = self.build(target)
        self._model = model  # the atomic swap: one reference assignment
        self.path = target
        self.reloads += 1
        self.failure = None
        release_freed_memory()  # the load's temporaries (and a replaced model) leave the heap
        return model

    def build(self, target: Path) -> LoadedModel:
        """``load_model`` of ``target``; any failure is a ``BundleError`` (a malformed bundle
        must not look like a server bug)."""
        try:
            return load_model(target, self.index, label=self.label, **self.load_options())
        except ItemvecError:
            raise
        except Exception as exc:
            logger.debug("loading %s failed", target, exc_info=True)
            raise BundleError(f"{target}: cannot load bundle ({type(exc).__name__}: "
                              f"{exc})") from exc

    def load_options(self) -> dict[str, Any]:
        """Extra ``load_model`` arguments (worker processes map the bundle)."""
        return {}

    def identity(self, model: LoadedModel) -> dict[str, Any]:
        """Which bundle version the process answering a request holds (for /health, /info)."""
        return {"version": bundle_version(model), "worker": os.getpid()}

    def peers_ready(self) -> bool:
        """Whether every process serving this port has a model (one process: itself)."""
        return True

    def _client_target(self, path: str | Path) -> Path:
        target = resolve_under(self.root, path)
        if not (target / "manifest.json").is_file():
            raise BundleError(f"no itemvec bundle at {str(path)!r} under the models root")
        return target

    def reload_quietly(self) -> None:
        """For signals and the watcher: keep serving the old model if the new one is broken,
        and keep the failure for ``/health`` and the log."""
        try:
            self.reload()
        except Exception as exc:
            self.failure = self.public(str(exc))
            logger.error("reload failed, still serving the previous model: %s", exc)

    def watch(self, interval: float = 2.0) -> threading.Thread:
        """Poll the bundle's manifest and reload when it changes (a new bundle renamed in).

        The thread outlives any error: a broken bundle is reported and the next one loads.
        """
        if not interval >= MIN_WATCH_INTERVAL:  # also refuses NaN
            raise ItemvecError(f"watch interval must be at least {MIN_WATCH_INTERVAL} s, "
                               f"got {interval}")

        def signature() -> tuple | None:
            return file_signature(self.path / "manifest.json")

        first = signature()  # taken now: a change right after watch() returns is seen

        def loop() -> None:
            seen = first
            while True:
                time.sleep(interval)
                try:
                    now = signature()
                    if now is not None and now != seen:
                        time.sleep(min(interval, 0.5))  # let a rename settle
                        logger.info("bundle changed on disk; reloading")
                        self.reload_quietly()
                        seen = signature()
                except Exception:  # pragma: no cover - reload_quietly catches; belt and braces
                    logger.exception("bundle watcher error; still watching")

        thread = threading.Thread(target=loop, name="itemvec-watch", daemon=True)
        thread.start()
        return thread


__all__ = ["MIN_WATCH_INTERVAL", "BundleError", "LoadedModel", "ModelHolder", "NotReady",
           "cap_this_thread", "limit_threads", "load_model", "resolve_under", "without_paths"]
