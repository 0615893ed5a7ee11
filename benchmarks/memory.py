"""Peak resident memory of a block of work, measured in-process.

Linux: writing 5 to /proc/self/clear_refs resets the peak-RSS mark (VmHWM) to the current RSS,
so ``peak - start`` covers everything the block touched: numpy, BLAS, torch, gensim and implicit
buffers alike (tracemalloc would miss the C/C++ allocations). Memory freed earlier in the process
and reused by the allocator does not show up, so the figure is a lower bound of what a fresh
process would need. Where clear_refs is unavailable it falls back to tracemalloc (Python and
numpy allocations only); the method used is recorded next to the number.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _field(name: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(name)


def _can_reset() -> bool:
    try:
        _CLEAR.write_text("5")
        _field("VmHWM")
        return True
    except OSError:
        return False
    except KeyError:
        return False


METHOD = "rss" if _can_reset() else "tracemalloc"


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.mib`` (peak increase) and ``m.seconds``."""

    def __enter__(self) -> PeakMemory:
        if METHOD == "rss":
            _CLEAR.write_text("5")
            self.start = _field("VmRSS")
        else:
            tracemalloc.start()
            tracemalloc.reset_peak()
            self.start = tracemalloc.get_traced_memory()[0]
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.began
        if METHOD == "rss":
            peak = _field("VmHWM")
        else:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        self.mib = max(peak - self.start, 0) / 2**20
