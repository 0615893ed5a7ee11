"""Process-level resources of a server: the environment variables that size BLAS and OpenMP
thread pools when their library loads, and handing freed heap memory back to the system."""

from __future__ import annotations

import ctypes
import logging

logger = logging.getLogger(__name__)

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the system (glibc ``malloc_trim``); False where there
    is no glibc. Loading a bundle frees tens of MiB of temporaries in the middle of the heap
    (at 1M items), which glibc otherwise keeps as the process's private memory
    (benchmarks/serving.md, "Request path, profiled")."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


__all__ = ["THREAD_ENV", "release_freed_memory"]
