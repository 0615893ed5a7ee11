"""Thread limits reach the threads that compute: request threads and the batching thread get
one OpenMP thread (``serve.threads``) even when FAISS loaded before the limit was set; OpenMP
limits set by a call bind only the calling thread."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from itemvec.util.process import release_freed_memory

SCRIPT = textwrap.dedent("""
    import asyncio, json, os, threading
    import faiss  # loaded before any limit: its default pool is one thread per core
    from itemvec.serve.batching import Batcher
    from itemvec.serve.state import cap_this_thread, limit_threads

    out = {"cores": faiss.omp_get_max_threads()}
    limit_threads(1)
    out["env"] = os.environ["OMP_NUM_THREADS"]
    out["main"] = faiss.omp_get_max_threads()

    def in_thread(fn):
        box = []
        thread = threading.Thread(target=lambda: box.append(fn()))
        thread.start()
        thread.join()
        return box[0]

    out["plain_thread"] = in_thread(faiss.omp_get_max_threads)
    out["capped_thread"] = in_thread(lambda: (cap_this_thread(), faiss.omp_get_max_threads())[1])
    batcher = Batcher(threads=1)
    out["batching_thread"] = asyncio.run(batcher.submit(
        "k", None, lambda payloads: [faiss.omp_get_max_threads() for _ in payloads]))
    batcher.close()
    print(json.dumps(out))
""")


def test_request_and_batching_threads_are_capped_though_faiss_loaded_first():
    pytest.importorskip("faiss")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",
                                                           "OPENBLAS_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=120, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["env"] == "1" and out["main"] == 1
    assert out["capped_thread"] == 1 and out["batching_thread"] == 1
    if out["cores"] > 1:  # what the caps are for: a new thread starts from the default pool
        assert out["plain_thread"] == out["cores"]


def test_freed_heap_goes_back_where_there_is_glibc(monkeypatch):
    if platform.libc_ver()[0] == "glibc":
        assert release_freed_memory() is True
    else:  # musl (Alpine), macOS, Windows: a no-op, whatever libc.so.6 turns out to be
        assert release_freed_memory() in (True, False)
    monkeypatch.setattr(ctypes, "CDLL", lambda _name: (_ for _ in ()).throw(OSError("none")))
    assert release_freed_memory() is False


def test_a_thread_cap_threadpoolctl_cannot_set_fails_no_request(monkeypatch):
    """The cap is an optimisation: where threadpoolctl raises (an unusual BLAS or libc), a
    request thread runs uncapped rather than answering 500."""
    import threading

    from itemvec.serve import state

    def broken(*_args, **_kwargs):
        raise OSError("no such library")

    monkeypatch.setattr(state, "threadpool_limits", broken)
    errors = []

    def request():
        try:
            state.cap_this_thread()
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            errors.append(exc)

    thread = threading.Thread(target=request)
    thread.start()
    thread.join()
    assert errors == []
