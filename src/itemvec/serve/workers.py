"""Several worker processes behind one port, sharing one memory-mapped bundle.

``itemvec serve DIR --workers N`` runs uvicorn's process manager (``Multiprocess``): the parent
binds the port and spawns N workers, each building the full app with ``worker_app``. Workers
learn their settings from a JSON file named by ``ITEMVEC_SERVE_SETTINGS`` in a private run
directory, and load the bundle memory-mapped (``load_model(..., mmap=True)``), so the vectors,
logits, co-occurrence parts and IVF lists sit once in the page cache whatever N is.

Reload across workers goes through one small file in the run directory, ``generation.json``
(``{"generation": k, "path": ...}``). ``POST /admin/reload`` loads the new bundle in the worker
it hits (so a bad path is that request's error), then bumps the generation; SIGHUP to the parent
and ``--watch`` (a thread in the parent) bump it too. Every worker polls the file's stat and,
on a new generation, loads that bundle aside and swaps one reference, as a single process does:
during the swap each request is answered by the old or the new bundle. A worker started later
(a crashed one replaced) loads the current generation's bundle.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors.multiprocess import Multiprocess

from itemvec.serve.http import create_app
from itemvec.serve.state import LoadedModel, ModelHolder, limit_threads, load_model, resolve_under
from itemvec.util.errors import ItemvecError
from itemvec.util.files import atomic_write_bytes

logger = logging.getLogger(__name__)

ENV = "ITEMVEC_SERVE_SETTINGS"
SETTINGS = "settings.json"
GENERATION = "generation.json"
READY = "ready"
POLL_SECONDS = 0.5


@dataclass
class WorkerSettings:
    """What every worker needs to build the app; written as JSON, never pickled."""
    bundle: str
    run_dir: str
    workers: int
    index: str = "auto"
    models_root: str | None = None
    api_key_file: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_body: int = 1 << 20
    threads: int = 1

    @classmethod
    def read(cls, path: str | Path) -> WorkerSettings:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


# -- the generation file -------------------------------------------------------------------------
def read_generation(run_dir: Path) -> tuple[int, Path]:
    state = json.loads((run_dir / GENERATION).read_text(encoding="utf-8"))
    return int(state["generation"]), Path(state["path"])


def bump_generation(run_dir: Path, path: Path) -> int:
    """Record ``path`` as the bundle every worker should serve, under a new generation number."""
    with open(run_dir / ".generation.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        generation = read_generation(run_dir)[0] + 1
        atomic_write_bytes(run_dir / GENERATION, json.dumps(
            {"generation": generation, "path": str(path)}).encode())
    return generation


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


# -- a worker --------------------------------------------------------------------------------------
class SharedHolder(ModelHolder):
    """A model holder that follows the run directory's generation file."""

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings.bundle, settings.models_root, settings.index)
        self.run_dir = Path(settings.run_dir)
        self.workers = settings.workers
        self.generation = 0

    def _load(self, path: Path, generation: int) -> LoadedModel:
        with self._lock:
            model = load_model(path, self.index, mmap=True, mapped_cache=self.run_dir / "cache")
            self._model, self.path, self.generation = model, path, generation
            self.reloads += 1
        return model

    def load(self) -> LoadedModel:
        """The current generation's bundle; marks this worker ready."""
        model = self._load(*reversed(read_generation(self.run_dir)))
        (self.run_dir / READY).mkdir(exist_ok=True)
        (self.run_dir / READY / str(os.getpid())).touch()
        return model

    def reload(self, path: str | Path | None = None) -> LoadedModel:
        """Load ``path`` here (errors are this request's), then have every worker follow."""
        target = self.path if path is None else resolve_under(self.root, path)
        model = self._load(target, self.generation)
        self.generation = bump_generation(self.run_dir, target)
        return model


    def follow(self, interval: float = POLL_SECONDS) -> threading.Thread:
        """Poll the generation file; load a newer generation's bundle and swap it in."""

        def loop() -> None:
            seen = None
            while True:
                time.sleep(interval)
                now = _stat(self.run_dir / GENERATION)
                if now is None or now == seen:
                    continue
                seen = now
                try:
                    generation, path = read_generation(self.run_dir)
                    if generation > self.generation:
                        logger.info("worker %d: loading generation %d (%s)", os.getpid(),
                                    generation, path.name)
                        self._load(path, generation)
                except (ItemvecError, OSError, ValueError, KeyError) as exc:
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
    limit_threads(settings.threads)
    key = (Path(settings.api_key_file).read_text(encoding="utf-8").strip()
           if settings.api_key_file else None)
    holder = SharedHolder(settings)
    holder.load()
    holder.follow()
    return create_app(holder, api_key=key, cors_origins=settings.cors_origins,
                      max_body=settings.max_body)


# -- the parent ------------------------------------------------------------------------------------
class Supervisor(Multiprocess):
    """uvicorn's process manager, but SIGHUP reloads the bundle inside every worker (a new
    generation) instead of restarting the processes."""

    def __init__(self, config: uvicorn.Config, sockets: list, run_dir: Path) -> None:
        super().__init__(config, sockets)
        self.run_dir = run_dir

    def handle_hup(self) -> None:
        generation = bump_generation(self.run_dir, read_generation(self.run_dir)[1])
        logger.info("SIGHUP: workers reload the bundle (generation %d)", generation)


def watch_bundle(run_dir: Path, interval: float) -> threading.Thread:
    """``--watch`` in the parent: a new generation when the served bundle's manifest changes."""

    def loop() -> None:
        served, seen = None, None
        while True:
            time.sleep(interval)
            try:
                path = read_generation(run_dir)[1]
                now = _stat(path / "manifest.json")
                if path != served:
                    served, seen = path, now
                elif now is not None and now != seen:
                    time.sleep(min(interval, 0.5))  # let a rename settle
                    logger.info("bundle changed on disk; workers reload it")
                    bump_generation(run_dir, path)
                    seen = _stat(path / "manifest.json")
            except (OSError, ValueError, KeyError) as exc:
                logger.error("watching the bundle failed this time: %s", exc)

    thread = threading.Thread(target=loop, name="itemvec-watch", daemon=True)
    thread.start()
    return thread


def run_workers(settings: WorkerSettings, host: str, port: int, access_log: bool = False,
                watch_interval: float | None = None) -> None:
    """Serve with ``settings.workers`` processes on HOST:PORT until SIGINT/SIGTERM."""
    run_dir = Path(settings.run_dir)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        atomic_write_bytes(run_dir / SETTINGS, json.dumps(asdict(settings)).encode())
        atomic_write_bytes(run_dir / GENERATION, json.dumps(
            {"generation": 0, "path": str(Path(settings.bundle).resolve())}).encode())
        os.environ[ENV] = str(run_dir / SETTINGS)
        config = uvicorn.Config(f"{__name__}:worker_app", factory=True, host=host, port=port,
                                workers=settings.workers, log_level="warning",
                                access_log=access_log, timeout_graceful_shutdown=5)
        supervisor = Supervisor(config, [config.bind_socket()], run_dir)
        if watch_interval is not None:
            watch_bundle(run_dir, watch_interval)
        supervisor.run()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def new_run_dir() -> str:
    """A private directory for one service's settings, generation file and mapped parts."""
    return tempfile.mkdtemp(prefix="itemvec-serve-")


__all__ = ["ENV", "SharedHolder", "Supervisor", "WorkerSettings", "new_run_dir", "run_workers",
           "worker_app"]
