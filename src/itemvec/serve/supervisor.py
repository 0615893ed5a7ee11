"""The parent of ``itemvec serve --workers N``: uvicorn's process manager plus the shared state.

The CLI checks the bundle, writes the settings (JSON, never pickle) into a private run
directory and replaces itself with ``python -m itemvec.serve.supervisor SETTINGS``, so the
parent, and the workers it spawns, import only what serving needs. The parent binds the port
and runs uvicorn's ``Multiprocess``; each worker builds its app with
``itemvec.serve.workers:worker_app``. ``generation.json`` in the run directory names the bundle
every worker should serve: SIGHUP to the parent and ``--watch`` bump it (a reload in place in
every worker, not a restart), as does ``POST /admin/reload`` in the worker it hits.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from itemvec.util.files import atomic_write_bytes, file_signature
from itemvec.util.process import THREAD_ENV

logger = logging.getLogger(__name__)

ENV = "ITEMVEC_SERVE_SETTINGS"
SETTINGS = "settings.json"
GENERATION = "generation.json"
READY = "ready"


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
    host: str = "127.0.0.1"
    port: int = 8000
    access_log: bool = False
    watch_interval: float | None = None  # None: no --watch
    label: str | None = None
    allow_reload: bool = False
    reload_interval: float = 2.0

    @classmethod
    def read(cls, path: str | Path) -> WorkerSettings:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


# -- the generation file -------------------------------------------------------------------------
def read_generation(run_dir: Path) -> tuple[int, Path]:
    """The current generation number and the bundle it names."""
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
                now = file_signature(path / "manifest.json")
                if path != served:
                    served, seen = path, now
                elif now is not None and now != seen:
                    time.sleep(min(interval, 0.5))  # let a rename settle
                    logger.info("bundle changed on disk; workers reload it")
                    bump_generation(run_dir, path)
                    seen = file_signature(path / "manifest.json")
            except (OSError, ValueError, KeyError) as exc:
                logger.error("watching the bundle failed this time: %s", exc)

    thread = threading.Thread(target=loop, name="itemvec-watch", daemon=True)
    thread.start()
    return thread


def run_workers(settings: WorkerSettings) -> None:
    """Serve with ``settings.workers`` processes until SIGINT/SIGTERM; removes the run dir."""
    run_dir = Path(settings.run_dir)
    try:
        atomic_write_bytes(run_dir / GENERATION, json.dumps(
            {"generation": 0, "path": str(Path(settings.bundle).resolve())}).encode())
        os.environ[ENV] = str(run_dir / SETTINGS)
        for name in THREAD_ENV:  # workers start with capped pools, before numpy or torch load
            os.environ[name] = str(settings.threads)
        # Freed score buffers return to the system rather than to one glibc arena per thread.
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        config = uvicorn.Config("itemvec.serve.workers:worker_app", factory=True, host=settings.host,
                                port=settings.port, workers=settings.workers,
                                log_level="warning", access_log=settings.access_log,
                                timeout_graceful_shutdown=5)
        supervisor = Supervisor(config, [config.bind_socket()], run_dir)
        if settings.watch_interval is not None:
            watch_bundle(run_dir, settings.watch_interval)
        supervisor.run()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def exec_supervisor(settings: WorkerSettings) -> None:
    """Replace this process by ``python -m itemvec.serve.supervisor SETTINGS``: the supervisor
    and the workers it spawns import only the serving modules, not the whole CLI."""
    run_dir = Path(tempfile.mkdtemp(prefix="itemvec-serve-"))
    settings.run_dir = str(run_dir)
    atomic_write_bytes(run_dir / SETTINGS, json.dumps(asdict(settings)).encode())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", __name__, str(run_dir / SETTINGS)])


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    run_workers(WorkerSettings.read(sys.argv[1]))


__all__ = ["ENV", "GENERATION", "READY", "Supervisor", "WorkerSettings", "bump_generation",
           "exec_supervisor", "read_generation", "run_workers"]


if __name__ == "__main__":
    main()
