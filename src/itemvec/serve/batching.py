"""Micro-batching: concurrent queries of one process scored together by one compute thread.

A request handler (on the event loop) hands its query to ``Batcher.submit`` and awaits the
answer. The batcher's thread takes whatever has queued up while it was busy (up to
``max_batch``; it never waits for more, so a lone request pays no delay), groups the queries that
can be answered together (same model, same kind of query, same parameters), runs each group's
function once and settles every waiting request with one call into the event loop. Under load
this replaces one threadpool hand-off per request with one per batch, and lets a group of
recommendations share one pass over the item vectors (``ItemEmbeddings.recommend_many``: each
answer is the one ``recommend`` gives alone, bit for bit).

The thread caps its own BLAS/OpenMP pools (``threads``): OpenMP limits bind the calling
thread only, so a limit set in the main thread does not reach it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from threadpoolctl import threadpool_limits

from itemvec.util.errors import ItemvecError

logger = logging.getLogger(__name__)

MAX_BATCH = 32
Run = Callable[[Sequence[Any]], Sequence[Any]]  # payloads -> one result (or exception) each


@dataclass
class Job:
    key: Hashable  # jobs with equal keys run together, through the first one's ``run``
    payload: Any
    run: Run
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class Batcher:
    """One compute thread answering queued queries in groups (see the module text)."""

    def __init__(self, max_batch: int = MAX_BATCH, threads: int = 1,
                 name: str = "itemvec-batch") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self.threads = threads
        self.name = name
        # a Thread in the queue is that thread's stop (a stop left for a thread that already
        # ended must not end the next one)
        self._jobs: queue.SimpleQueue[Job | threading.Thread] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # groups run so far (for tests and logs)
        self.largest = 0  # largest group so far

    async def submit(self, key: Hashable, payload: Any, run: Run) -> Any:
        """``run([payload, ...])``'s answer for ``payload``, computed with others of ``key``."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put(Job(key, payload, run, loop, future))
        self._ensure_started()  # after the put: a thread ending now either sees it or is replaced
        return await future

    def close(self) -> None:
        """Stop the thread after the queries already queued."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(thread)
            if thread is not threading.current_thread():  # e.g. a finaliser run by the GC there
                thread.join(timeout=5)

    def _ensure_started(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        try:
            threadpool_limits(self.threads)  # this thread's own OpenMP pools
        except Exception:  # a cap is an optimisation: a thread that dies here answers nobody
            logger.warning("cannot limit the batching thread's BLAS/OpenMP threads",
                           exc_info=True)
        while True:
            first = self._jobs.get()
            if not isinstance(first, Job):
                if first is threading.current_thread():
                    return
                continue  # an ended thread's stop
            jobs, stop = self._drain(first)
            groups = _groups(jobs)
            for position, group in enumerate(groups):
                try:
                    self._run(group)
                except BaseException as exc:  # the thread ends: nobody it took may wait forever
                    error = RuntimeError(f"the batching thread stopped ({type(exc).__name__})")
                    for rest in groups[position:]:
                        self._deliver(rest, [error] * len(rest))
                    self._hand_over()
                    raise
            if stop:
                return

    def _hand_over(self) -> None:
        """The calling thread is ending: the next query starts a new one, and queries already
        queued get one now (a query queued while this thread still looked alive must not wait
        for the next request)."""
        with self._start_lock:
            if self._thread is threading.current_thread():
                self._thread = None
        if not self._jobs.empty():
            self._ensure_started()

    def _drain(self, first: Job) -> tuple[list[Job], bool]:
        """``first`` and what else is queued now, up to ``max_batch``; whether to stop after."""
        jobs = [first]
        while len(jobs) < self.max_batch:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if not isinstance(job, Job):
                if job is threading.current_thread():
                    return jobs, True
                continue
            jobs.append(job)
        return jobs, False

    def _run(self, group: list[Job]) -> None:
        try:
            results = list(group[0].run([job.payload for job in group]))
            if len(results) != len(group):
                raise RuntimeError(f"batch function answered {len(results)} of {len(group)}")
        except Exception as exc:  # every waiting request gets the error (a 500 or its own)
            if not isinstance(exc, ItemvecError):
                logger.exception("batched query failed")
            results = [exc] * len(group)
        self.batches += 1
        self.largest = max(self.largest, len(group))
        self._deliver(group, results)

    @staticmethod
    def _deliver(group: list[Job], results: Sequence[Any]) -> None:
        """Settle each job's future with its result (or exception) on its event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
        for job, result in zip(group, results, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, result))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop closed while the query ran: nobody waits
                pass


def _groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs grouped by key, groups in order of their first job."""
    groups: dict[Hashable, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.key, []).append(job)
    return list(groups.values())


def _settle(settled: list[tuple[asyncio.Future, Any]]) -> None:
    """On the event loop: hand each waiting request its result (or exception)."""
    for future, result in settled:
        if future.done():  # the client went away; its request was cancelled
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


__all__ = ["MAX_BATCH", "Batcher", "Job"]
