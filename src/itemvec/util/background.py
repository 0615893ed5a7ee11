"""Run an iterator in a thread, one item ahead, so reading overlaps computing."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

_END = object()


def background(items: Iterator, depth: int = 1) -> Iterator:
    """Produce ``items`` in a thread, at most ``depth`` ahead of the consumer.

    Reading and preparing a chunk is mostly polars, counting it mostly numpy; both release the
    GIL, so the next chunk is read on one core while this one is counted on the other. Errors
    raised while producing are re-raised here; stopping early stops the thread."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer
            put((None, exc))

    thread = threading.Thread(target=run, name="itemvec-count-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()
