"""Training trackers: epoch callbacks for ``Trainer(..., callbacks=[...])``.

Every stage (co-occurrence, histories, coldstart) reports here; records carry ``stage``.

- ``JsonLog``: one JSON object per epoch in a ``.jsonl`` file, rewritten atomically after every
  epoch so a reader (or a crash) never sees half a line. Needs nothing beyond the standard library.
- ``TensorBoardLog``: scalars for TensorBoard. ``torch.utils.tensorboard`` needs the optional
  ``tensorboard`` package (``pip install 'itemvec[track]'``); it is imported only when asked for.

Both are context managers; ``close()`` is safe to call twice.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from itemvec.train.trainer import COOCCURRENCE
from itemvec.util.errors import ItemvecError
from itemvec.util.files import atomic_write_bytes

logger = logging.getLogger(__name__)
JSON_LOG_NAME = "training_log.jsonl"
# what each stage's validation number is (histories: mean of i2i and s2i HR@20)
VALIDATION_TAGS = {"histories": "mean_hr@20", "coldstart": "minus_held_out_loss"}


def json_log_path(path: str | Path) -> Path:
    """A directory (existing, or a name without a suffix) gets ``training_log.jsonl`` inside."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        return path / JSON_LOG_NAME
    return path


class _Tracker:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        pass


class JsonLog(_Tracker):
    """Writes every epoch record (plus wall-clock seconds since start) to a JSON-lines file."""

    def __init__(self, path: str | Path) -> None:
        self.path = json_log_path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        self.started = time.perf_counter()

    def __call__(self, record: dict) -> None:
        entry = {**record, "seconds": round(time.perf_counter() - self.started, 3)}
        self.records.append(entry)
        text = "".join(json.dumps(r, default=float) + "\n" for r in self.records)
        atomic_write_bytes(self.path, text.encode())


class TensorBoardLog(_Tracker):
    """Scalars ``train/loss`` and ``validation/hr@20`` per epoch, in a TensorBoard log dir
    (a later stage's under ``<stage>/``)."""

    def __init__(self, logdir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ItemvecError(f"--tensorboard {logdir}: needs the 'tensorboard' package; "
                               "install it with pip install 'itemvec[track]'") from None
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(log_dir=str(self.logdir))

    def __call__(self, record: dict) -> None:
        epoch = int(record["epoch"])
        stage = record.get("stage", COOCCURRENCE)
        prefix = "" if stage == COOCCURRENCE else f"{stage}/"  # later stages: their own curves
        if "loss" in record:  # not for epoch 0, the scored start
            self.writer.add_scalar(f"{prefix}train/loss", float(record["loss"]), epoch)
        if record.get("validation") is not None:
            self.writer.add_scalar(f"{prefix}validation/{VALIDATION_TAGS.get(stage, 'hr@20')}",
                                   float(record["validation"]), epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def make_trackers(tensorboard: str | Path | None = None,
                  log_json: str | Path | None = None) -> list[_Tracker]:
    """The trackers the CLI options asked for (possibly none)."""
    trackers: list[_Tracker] = []
    if log_json is not None:
        trackers.append(JsonLog(log_json))
    if tensorboard is not None:
        trackers.append(TensorBoardLog(tensorboard))
    return trackers


def close_all(trackers: list[_Tracker]) -> None:
    for tracker in trackers:
        try:
            tracker.close()
        except Exception:  # a tracker failing to close must not hide the training outcome
            logger.warning("could not close %s", type(tracker).__name__, exc_info=True)
