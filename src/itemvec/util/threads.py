"""The environment variables that size BLAS and OpenMP thread pools when their library loads."""

from __future__ import annotations

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

__all__ = ["THREAD_ENV"]
