"""One worker process of ``itemvec serve --workers N`` (``itemvec.serve.supervisor`` runs them).

Each worker loads the bundle memory-mapped (``load_model(..., mmap=True)``), so the vectors,
logits, co-occurrence parts and IVF lists sit once in the page cache whatever N is, and
follows the run directory's ``generation.json``: ``POST /admin/reload`` loads the new bundle in
the worker it hits (a bad path is that request's error), then bumps the generation; every
worker polls the file's stat and, on a new generation, loads that bundle aside and swaps one
reference, as a single process does, so during a swap each request is answered by the old or
the new bundle. A worker started later (a crashed one replaced) loads the current generation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from itemvec.serve.http import create_app
from itemvec.serve.state import LoadedModel, ModelHolder, limit_threads
from itemvec.serve.supervisor import (
    ENV,
    GENERATION,
    READY,
    WorkerSettings,
    bump_generation,
    read_generation,
)
from itemvec.util.files import file_signature

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
REQUEST_THREADS = 4


# -- a worker --------------------------------------------------------------------------------------
class SharedHolder(ModelHolder):
    """A model holder that follows the run directory's generation file."""

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings.bundle, settings.models_root, settings.index, settings.label)
        self.run_dir = Path(settings.run_dir)
        self.workers = settings.workers
        self.generation = 0

    def load_options(self) -> dict[str, Any]:
        return {"mmap": True, "mapped_cache": self.run_dir / "cache"}

    def _load(self, path: Path, generation: int) -> LoadedModel:
        with self._lock:
            model = self._install(path)
            self.generation = generation
        return model

    def load(self) -> LoadedModel:
        """The current generation's bundle; marks this worker ready."""
        model = self._load(*reversed(read_generation(self.run_dir)))
        (self.run_dir / READY).mkdir(exist_ok=True)
        (self.run_dir / READY / str(os.getpid())).touch()
        return model

    def reload(self, path: str | Path | None = None) -> LoadedModel:
        """Load ``path`` here (errors are this request's), then have every worker follow."""
        target = self.path if path is None else self._client_target(path)
        model = self._load(target, self.generation)
        self.generation = bump_generation(self.run_dir, target)
        return model

    def follow(self, interval: float = POLL_SECONDS) -> threading.Thread:
        """Poll the generation file; load a newer generation's bundle and swap it in."""

        def loop() -> None:
            seen = None
            while True:
                time.sleep(interval)
                now = file_signature(self.run_dir / GENERATION)
                if now is None or now == seen:
                    continue
                seen = now
                try:
                    generation, path = read_generation(self.run_dir)
                    if generation > self.generation:
                        logger.info("worker %d: loading generation %d (%s)", os.getpid(),
                                    generation, path.name)
                        self._load(path, generation)
                except Exception as exc:  # keep following; /health says degraded
                    self.failure = self.public(str(exc))
                    logger.error("worker %d: reload failed, still serving the previous model: %s",
                                 os.getpid(), exc)

        thread = threading.Thread(target=loop, name="itemvec-follow", daemon=True)
        thread.start()
        return thread

    def peers_ready(self) -> bool:
        """Whether every worker has loaded its bundle (ready markers of live processes)."""
        return ready_workers(self.run_dir) >= self.workers

    def identity(self, model: LoadedModel) -> dict[str, Any]:
        return {**super().identity(model), "generation": self.generation,
                "workers": self.workers}


def ready_workers(run_dir: Path) -> int:
    """How many live worker processes have loaded a bundle."""
    count = 0
    for marker in (run_dir / READY).glob("*") if (run_dir / READY).is_dir() else ():
        try:
            os.kill(int(marker.name), 0)
        except (ValueError, ProcessLookupError):
            continue
        except PermissionError:  # pragma: no cover - another user's reused pid
            continue
        count += 1
    return count


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn calls this factory in each worker)."""
    settings = WorkerSettings.read(os.environ[ENV])
    limit_threads(settings.threads)  # the supervisor set THREAD_ENV before anything loaded
    key = (Path(settings.api_key_file).read_text(encoding="utf-8").strip()
           if settings.api_key_file else None)
    holder = SharedHolder(settings)
    holder.load()
    holder.follow()
    app = create_app(holder, api_key=key, cors_origins=settings.cors_origins,
                     max_body=settings.max_body, allow_reload=settings.allow_reload,
                     reload_interval=settings.reload_interval, threads=settings.threads)
    limit_request_threads(app, REQUEST_THREADS)
    return app


def limit_request_threads(app: FastAPI, threads: int = REQUEST_THREADS) -> None:
    """At most ``threads`` requests compute at once in this process (the rest wait their turn;
    ``itemvec serve`` applies it with one worker too).

    FastAPI runs sync handlers on AnyIO's pool of 40 threads; on one core 40 concurrent 1M-item
    scans only share the core, each holding its own score buffers (measured: a few hundred MiB
    of private memory per worker, and no 1M-item recommendation finished within 5 s at 50 in
    flight).
    """
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(wrapped: FastAPI):
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        async with inner(wrapped) as state:
            yield state

    app.router.lifespan_context = lifespan




__all__ = ["REQUEST_THREADS", "SharedHolder", "limit_request_threads", "ready_workers",
           "worker_app"]
