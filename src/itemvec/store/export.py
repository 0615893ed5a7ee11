"""Write item vectors for other tools: Parquet, JSONL, CSV, NumPy and word2vec (text/binary).

- ``parquet`` / ``jsonl``: ``item_id`` (string) and ``embedding`` (list of float32);
- ``csv``: ``item_id`` then one column per dimension, ``dim_0`` ... ``dim_{d-1}``;
- ``npy``: the float32 matrix (items x dim) in row order, with the ids one per line in
  ``NAME.ids.txt`` beside it (``emb.npy`` -> ``emb.ids.txt``): a .npy file holds numbers only;
- ``word2vec`` / ``word2vec-binary``: the format of the original word2vec tool, which gensim's
  ``KeyedVectors.load_word2vec_format(path, binary=...)`` reads. Its tokens are separated by
  spaces, so an id with whitespace could not come back as itself: such ids are refused, naming
  them, rather than written so that gensim silently reads other ids.

Every file is written atomically (a reader never sees half of it), never inside a bundle.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import polars as pl

from itemvec.store.bundle import refuse_inside_bundle
from itemvec.util.errors import ItemvecError
from itemvec.util.files import atomic_write_bytes

logger = logging.getLogger(__name__)

FORMATS = ("parquet", "jsonl", "csv", "npy", "word2vec", "word2vec-binary")
BY_EXTENSION = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
                ".csv": "csv", ".npy": "npy"}
WHITESPACE = re.compile(r"\s")


def export_format(out: Path, requested: str | None = None) -> str:
    """The format to write: ``requested`` (checked), else decided by ``out``'s extension."""
    if requested is not None:
        if requested.lower() not in FORMATS:
            raise ItemvecError(f"--format {requested!r}: unknown; use one of {', '.join(FORMATS)}")
        return requested.lower()
    found = BY_EXTENSION.get(Path(out).suffix.lower())
    if found is None:
        raise ItemvecError(
            f"--out {out}: unknown extension; use .parquet, .jsonl, .csv or .npy, or name the "
            f"format with --format ({', '.join(FORMATS)})")
    return found


def ids_path(out: Path) -> Path:
    """Where the ids of a .npy export go: ``NAME.ids.txt`` beside ``NAME.npy``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.ids.txt")


def export_vectors(out: Path, item_ids: np.ndarray, vectors: np.ndarray,
                   fmt: str) -> list[Path]:
    """Write ``vectors`` (rows aligned with ``item_ids``) to ``out`` as ``fmt``; returns the
    files written. Never into a bundle directory: its parts are checksummed."""
    for path in ([Path(out), ids_path(out)] if fmt == "npy" else [Path(out)]):
        refuse_inside_bundle(path)
    ids = [str(i) for i in item_ids]
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if fmt == "npy":
        _check_line_safe(ids, fmt)
        atomic_write_bytes(ids_path(out), ("\n".join(ids) + "\n").encode())
        atomic_write_bytes(out, _npy_bytes(vectors))
        return [Path(out), ids_path(out)]
    writers = {"parquet": _frame_bytes, "jsonl": _frame_bytes, "csv": _csv_bytes,
               "word2vec": _word2vec_text, "word2vec-binary": _word2vec_binary}
    if fmt not in writers:
        raise ItemvecError(f"--format {fmt!r}: unknown; use one of {', '.join(FORMATS)}")
    if fmt.startswith("word2vec"):
        _check_tokens(ids, fmt)
    atomic_write_bytes(out, writers[fmt](ids, vectors, fmt))
    return [Path(out)]


def _frame_bytes(ids: list[str], vectors: np.ndarray, fmt: str) -> bytes:
    frame = pl.DataFrame({
        "item_id": pl.Series(ids, dtype=pl.String),
        "embedding": pl.Series(vectors).cast(pl.List(pl.Float32)),
    })
    buffer = io.BytesIO()
    if fmt == "parquet":
        frame.write_parquet(buffer)
    else:
        frame.write_ndjson(buffer)
    return buffer.getvalue()


def _csv_bytes(ids: list[str], vectors: np.ndarray, fmt: str) -> bytes:
    frame = pl.DataFrame({"item_id": pl.Series(ids, dtype=pl.String)}).hstack(
        pl.DataFrame(vectors, schema=[f"dim_{d}" for d in range(vectors.shape[1])]))
    buffer = io.BytesIO()
    frame.write_csv(buffer)
    return buffer.getvalue()


def _npy_bytes(vectors: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, vectors, allow_pickle=False)
    return buffer.getvalue()


def _word2vec_text(ids: list[str], vectors: np.ndarray, fmt: str) -> bytes:
    """``n dim`` then ``id v1 v2 ...`` per line; 9 significant digits round-trip float32."""
    buffer = io.StringIO()
    np.savetxt(buffer, vectors, fmt="%.9g", delimiter=" ")
    rows = buffer.getvalue().splitlines()
    body = "".join(f"{item} {row}\n" for item, row in zip(ids, rows, strict=True))
    return f"{len(ids)} {vectors.shape[1]}\n{body}".encode()


def _word2vec_binary(ids: list[str], vectors: np.ndarray, fmt: str) -> bytes:
    """``n dim`` then ``id`` + space + little-endian float32s + newline per item."""
    little = vectors.astype("<f4", copy=False)
    parts = [f"{len(ids)} {vectors.shape[1]}\n".encode()]
    for item, row in zip(ids, little, strict=True):
        parts += [item.encode(), b" ", row.tobytes(), b"\n"]
    return b"".join(parts)


def _check_tokens(ids: list[str], fmt: str) -> None:
    """word2vec ids are space-separated tokens: refuse empty ids and ids with whitespace."""
    bad = [i for i in ids if not i or WHITESPACE.search(i)]
    if bad:
        raise ItemvecError(
            f"--format {fmt}: {len(bad)} item id(s) contain whitespace or are empty (e.g. "
            f"{bad[0]!r}); word2vec files separate tokens with spaces, so gensim would read "
            f"them as other ids; export .parquet, .jsonl, .csv or .npy instead")


def _check_line_safe(ids: list[str], fmt: str) -> None:
    """The ids file has one id per line: refuse ids containing a line break."""
    bad = [i for i in ids if "\n" in i or "\r" in i]
    if bad:
        raise ItemvecError(f"--format {fmt}: {len(bad)} item id(s) contain a line break (e.g. "
                           f"{bad[0]!r}), which the ids file cannot hold; export .parquet or "
                           f".jsonl instead")
