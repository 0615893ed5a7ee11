"""Versioned model bundles: one directory, written atomically, loaded without pickle.

Layout::

    manifest.json        format version, config, data statistics, file checksums
    items.parquet        item_id (string) + item-table columns, in vocabulary order
    embeddings.npy       float32 unit vectors, one row per item (compact: per stored row)
    vector_rows.npy      int32 stored row of each item (compact bundles only, format 2)
    item_bias.npy        float32 learned popularity logits
    encoder.safetensors  encoder weights (optional)
    cooccurrence.npz     scipy CSR co-occurrence counts (optional)

A bundle is built in a temporary sibling directory and renamed into place, so an interrupted
write never leaves a half-written bundle at ``--out``; checksums catch later corruption.

Format 1 stores every item's vector. Format 2 (``store.compact``) is written when a model holds
its cold items compactly: ``embeddings.npy`` holds the warm rows and then each distinct cold
vector once, and ``vector_rows.npy`` maps every item to its row there, so a million cold
catalogue rows with a few thousand distinct feature rows cost megabytes, not a float32 vector
each. Plain bundles are still written as format 1, so older itemvec versions read them.
A part may be hard-linked from an earlier bundle (``reuse``): its recorded checksum is carried
over, since the bytes are the same file, and later verification checks it as ever.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from itemvec.config import QueryConfig, from_dict
from itemvec.store.compact import ROWS_DTYPE
from itemvec.util.errors import BundleError, ItemvecError
from itemvec.util.files import (
    NO_SPACE,
    check_writable,
    dir_mode,
    file_mode,
    fsync_tree,
    link_or_copy,
    out_of_space,
    sha256_file,
    swap_into_place,
)
from itemvec.util.version import VERSION

FORMAT_VERSION = 2  # the newest this itemvec reads and writes
PLAIN_FORMAT = 1  # every item's vector in embeddings.npy; written unless compact
ROWS_FILE = "vector_rows.npy"
MANIFEST = "manifest.json"
CHECKPOINT_DIRNAME = ".checkpoint"  # a training checkpoint may wait in ``--out`` (train.checkpoint)
REQUIRED_FILES = ("embeddings.npy", "item_bias.npy", "items.parquet")
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Manifest(BaseModel):
    """The fields a reader relies on; every manifest since format 1 has them, and a compact
    one (format 2, listing ``vector_rows.npy``) ``stored_vectors`` too. Other fields (config,
    stats, lineage, ...) pass through unchecked here."""

    model_config = ConfigDict(extra="allow")
    format_version: StrictInt = Field(ge=1)
    n_items: StrictInt = Field(ge=0)
    dim: StrictInt = Field(ge=1)
    temperature: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    query: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, Digest]
    stored_vectors: StrictInt | None = Field(default=None, ge=0, validate_default=True)

    @field_validator("stored_vectors")
    @classmethod
    def _compact_counts_its_rows(cls, stored: int | None, info: ValidationInfo) -> int | None:
        if stored is None and ROWS_FILE in (info.data.get("files") or {}):
            raise ValueError(f"files lists {ROWS_FILE}: the number of stored vectors is needed")
        return stored

    @field_validator("files")
    @classmethod
    def _has_required_parts(cls, files: dict[str, str]) -> dict[str, str]:
        missing = [name for name in REQUIRED_FILES if name not in files]
        if missing:
            raise ValueError(f"lists no checksum for {', '.join(missing)}")
        return files


class Vectors(Protocol):
    """What a bundle stores of trained item vectors; ``ItemEmbeddings`` is one.
    ``stored_vectors`` are the rows written to ``embeddings.npy``: every item's, or with
    ``vector_rows`` (compact) the distinct rows that index points into."""
    item_ids: np.ndarray
    stored_vectors: np.ndarray
    vector_rows: np.ndarray | None
    item_bias: np.ndarray
    temperature: float
    query: QueryConfig
    item_table: pl.DataFrame | None


@dataclass(frozen=True)
class Reused:
    """A part of an earlier bundle to hard-link into a new one, with its recorded digest."""
    path: Path
    digest: str


def reusable(bundle: Path, manifest: dict[str, Any], *names: str) -> dict[str, Reused]:
    """``Reused`` entries for those ``names`` the bundle's manifest records a digest for."""
    files = manifest.get("files", {})
    return {name: Reused(bundle / name, files[name]) for name in names if name in files}


@dataclass
class StoredVectors:
    """The vectors part of a bundle as read back; ``ItemEmbeddings.load`` builds on it."""
    item_ids: np.ndarray  # str objects, vocabulary order
    vectors: np.ndarray
    item_bias: np.ndarray
    temperature: float
    query: QueryConfig
    item_table: pl.DataFrame | None
    manifest: dict[str, Any]
    vector_rows: np.ndarray | None = None  # compact: item -> row of ``vectors``

    @property
    def stored_vectors(self) -> np.ndarray:
        return self.vectors


def check_target(out: Path) -> None:
    """``out`` must be absent, empty, a bundle, or hold only a training checkpoint, and its
    parent writable (the bundle is staged beside it): checked before any work."""
    if out.exists() and (not out.is_dir() or
                         (any(p.name != CHECKPOINT_DIRNAME for p in out.iterdir())
                          and not (out / MANIFEST).exists())):
        raise ItemvecError(f"--out {out} exists and is not an itemvec bundle; "
                           "choose a new directory or remove it")
    check_writable(out)


def refuse_inside_bundle(out: Path, option: str = "--out") -> None:
    """A file written into a bundle directory would replace or sit among its checksummed parts
    (``export DIR --out DIR/items.parquet`` broke the bundle): refuse it."""
    out = Path(os.path.abspath(out))
    for directory in (out, *out.parents):
        if (directory / MANIFEST).is_file():
            raise ItemvecError(f"{option} {out}: inside the model bundle {directory}; write "
                               "exports elsewhere (a bundle holds only its own files)")


def write_bundle(out: str | Path, embeddings: Vectors, *, config: dict[str, Any],
                 stats: dict[str, Any], encoder_state: dict | None = None,
                 cooccurrence: sp.csr_matrix | None = None, item_counts: np.ndarray | None = None,
                 extra: dict[str, Any] | None = None,
                 extra_files: dict[str, bytes] | None = None,
                 reuse: dict[str, Reused] | None = None) -> Path:
    """Write every part into a temp dir, checksum it, then swap it in place of ``out``.

    ``extra_files`` (name -> bytes, e.g. ``features.json``) are stored and checksummed too.
    ``reuse`` (name -> an earlier bundle's part and its recorded digest): the part is
    hard-linked (copied across file systems) instead of written, its digest carried over;
    ``encoder_state`` and ``cooccurrence`` may then be None for those names.
    """
    out = Path(out)
    check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        staging.chmod(dir_mode())  # mkdtemp makes 0700: honour the umask like mkdir would
        try:
            _write_staged(staging, embeddings, config, stats, encoder_state, cooccurrence,
                          item_counts, extra, extra_files, reuse or {})
        except Exception as exc:
            if _is_full_disk(exc):
                raise out_of_space(out, _bundle_bytes(embeddings, encoder_state, cooccurrence,
                                                      extra_files)) from None
            raise
        swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _write_staged(staging: Path, embeddings: Vectors, config: dict[str, Any],
                  stats: dict[str, Any], encoder_state: dict | None,
                  cooccurrence: sp.csr_matrix | None, item_counts: np.ndarray | None,
                  extra: dict[str, Any] | None, extra_files: dict[str, bytes] | None,
                  reuse: dict[str, Reused]) -> None:
    """Every part, then the manifest with their checksums, flushed to disk in ``staging``."""
    for name, part in reuse.items():
        link_or_copy(part.path, staging / name)
    files = _write_parts(staging, embeddings, encoder_state, cooccurrence, item_counts, reuse)
    for name, data in (extra_files or {}).items():
        if name not in reuse:
            (staging / name).write_bytes(data)
            files.append(name)
    digests = {name: part.digest for name, part in reuse.items()}
    compact = embeddings.vector_rows is not None
    manifest = {
        "format_version": FORMAT_VERSION if compact else PLAIN_FORMAT,
        "itemvec_version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n_items": len(embeddings.item_ids), "dim": embeddings.stored_vectors.shape[1],
        "temperature": embeddings.temperature, "query": embeddings.query.to_dict(),
        "config": config, "stats": stats, **(extra or {}),
        **({"stored_vectors": len(embeddings.stored_vectors)} if compact else {}),
        "files": {**digests, **{name: sha256_file(staging / name) for name in files}},
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    fsync_tree(staging)  # data on disk before the rename, so power loss cannot swap in holes


def _is_full_disk(exc: BaseException) -> bool:
    """A full disk as numpy (OSError, or 'N requested and M written'), polars (ComputeError)
    and safetensors (SafetensorError) report it."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return True
    text = str(exc).lower()
    return ("no space left" in text or "disk quota" in text
            or ("requested and" in text and "written" in text))


def _bundle_bytes(embeddings: Vectors, encoder_state: dict | None,
                  cooccurrence: sp.csr_matrix | None, extra_files: dict[str, bytes] | None) -> int:
    """About how many bytes a bundle takes (before compression): the figure a full disk
    message gives."""
    rows = embeddings.vector_rows
    total = embeddings.stored_vectors.nbytes + embeddings.item_bias.nbytes
    total += 0 if rows is None else len(rows) * 4
    total += sum(len(str(i).encode()) + 8 for i in embeddings.item_ids)
    if encoder_state is not None:
        total += sum(v.numel() * v.element_size() for v in encoder_state.values())
    if cooccurrence is not None:
        total += cooccurrence.data.nbytes + cooccurrence.indices.nbytes + cooccurrence.indptr.nbytes
    return total + sum(len(data) for data in (extra_files or {}).values())


def save_sparse(path: Path, matrix: sp.spmatrix | sp.sparray) -> None:
    """``scipy.sparse.save_npz``'s layout (``load_npz`` reads it) at zlib level 1, not 6:
    ~6x faster on co-occurrence counts for ~10% more bytes; at 10^8 non-zeros that is minutes."""
    matrix = matrix.tocsr()
    arrays = {"indices": matrix.indices, "indptr": matrix.indptr,
              "format": np.array(matrix.format.encode()), "shape": np.array(matrix.shape),
              "data": matrix.data}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _write_parts(staging: Path, embeddings: Vectors, encoder_state, cooccurrence,
                 item_counts, reuse: dict[str, Reused]) -> list[str]:
    """The parts not in ``reuse`` written into ``staging``; returns their names."""
    files = []
    arrays = {"embeddings.npy": embeddings.stored_vectors, "item_bias.npy": embeddings.item_bias}
    if embeddings.vector_rows is not None:
        arrays[ROWS_FILE] = np.asarray(embeddings.vector_rows, dtype=ROWS_DTYPE)
    for name, array in arrays.items():
        if name not in reuse:
            np.save(staging / name, array, allow_pickle=False)
            files.append(name)
    if "items.parquet" not in reuse:
        _item_frame(embeddings, item_counts).write_parquet(staging / "items.parquet")
        files.append("items.parquet")
    if encoder_state is not None and "encoder.safetensors" not in reuse:
        from safetensors.torch import save_file  # torch: reading vectors must not need it

        save_file({k: v.detach().cpu().contiguous() for k, v in encoder_state.items()},
                  str(staging / "encoder.safetensors"))
        os.chmod(staging / "encoder.safetensors", file_mode())  # safetensors writes 0600
        files.append("encoder.safetensors")
    if cooccurrence is not None and "cooccurrence.npz" not in reuse:
        save_sparse(staging / "cooccurrence.npz", cooccurrence)
        files.append("cooccurrence.npz")
    return files


def _item_frame(embeddings: Vectors, item_counts: np.ndarray | None) -> pl.DataFrame:
    frame = pl.DataFrame({"item_id": pl.Series([str(i) for i in embeddings.item_ids], dtype=pl.String)})
    if item_counts is not None:
        frame = frame.with_columns(pl.Series("count", np.asarray(item_counts, dtype=np.int64)))
    table = embeddings.item_table
    if table is not None:
        extra = table.drop([c for c in ("count",) if c in table.columns])
        frame = frame.join(extra, on="item_id", how="left", maintain_order="left")
    return frame


# -- reading -------------------------------------------------------------------------------------
def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: not an itemvec bundle (no {MANIFEST})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}/{MANIFEST}: corrupt ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}/{MANIFEST}: corrupt (a JSON {type(manifest).__name__}, "
                          "expected an object); write the bundle again")
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {version!r} is newer than this itemvec "
                          f"({VERSION}) reads (<= {FORMAT_VERSION}); upgrade itemvec")
    return _validated(manifest, path)


def _validated(manifest: dict[str, Any], path: Path) -> dict[str, Any]:
    """The manifest if its reader-facing fields are sound, else a BundleError naming the first
    bad field and its value."""
    try:
        Manifest.model_validate(manifest)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(map(str, error["loc"]))
        shown = "missing" if error["type"] == "missing" else repr(error.get("input"))[:60]
        raise BundleError(f"{path}/{MANIFEST}: corrupt: {field} = {shown} ({error['msg']}); "
                          "write the bundle again") from None
    return manifest


def verify(path: Path, manifest: dict[str, Any]) -> None:
    for name, expected in manifest.get("files", {}).items():
        part = path / name
        if not part.is_file():
            raise BundleError(f"{path}: missing file {name}; the bundle is incomplete")
        if sha256_file(part) != expected:
            raise BundleError(f"{path}/{name}: checksum mismatch; the bundle is corrupt or "
                              "truncated, write it again")


def read_vectors(path: str | Path, check: bool = True, mmap: bool = False,
                 item_ids: bool = True) -> StoredVectors:
    """The vectors, biases, item table and query settings of a bundle (checksums verified).

    ``mmap``: vectors and biases are read-only memory maps of the bundle files, so processes
    serving one bundle share one copy in the page cache. ``item_ids=False``: the ids are not
    made into Python strings (``item_ids`` is empty; ``store.mapped`` maps them instead).
    """
    path = Path(path)
    manifest = read_manifest(path)
    if check:
        verify(path, manifest)
    mode = "r" if mmap else None
    try:
        vectors = np.load(path / "embeddings.npy", mmap_mode=mode, allow_pickle=False)
        bias = np.load(path / "item_bias.npy", mmap_mode=mode, allow_pickle=False)
        rows = (np.load(path / ROWS_FILE, mmap_mode=mode, allow_pickle=False)
                if ROWS_FILE in manifest["files"] else None)
        items = pl.read_parquet(path / "items.parquet")
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        raise BundleError(f"{path}: cannot read bundle ({exc})") from None
    _check_shapes(path, manifest, vectors, bias, items, rows)
    query = from_dict(QueryConfig, manifest.get("query", {}), "manifest.query")
    ids = np.asarray(items["item_id"].to_list() if item_ids else [], dtype=object)
    return StoredVectors(ids, vectors, bias,
                         manifest.get("temperature", 1.0), query,
                         items if items.width > 1 else None, manifest, rows)


def _check_shapes(path: Path, manifest: dict[str, Any], vectors: np.ndarray, bias: np.ndarray,
                  items: pl.DataFrame, rows: np.ndarray | None = None) -> None:
    """Every part holds ``n_items`` rows (vectors ``dim`` wide; compact: ``stored_vectors``
    rows, each item's row index inside them): a part from another bundle with a recomputed
    checksum must not pair ids with the wrong vectors."""
    n, dim = manifest["n_items"], manifest["dim"]
    stored = n if rows is None else manifest.get("stored_vectors")
    shapes = [("embeddings.npy", vectors.shape, (stored, dim)),
              ("item_bias.npy", bias.shape, (n,)), ("items.parquet", (items.height,), (n,))]
    if rows is not None:
        shapes.append((ROWS_FILE, rows.shape, (n,)))
    problems = [(name, shape, want) for name, shape, want in shapes if tuple(shape) != want]
    if problems:
        name, shape, want = problems[0]
        raise BundleError(f"{path}/{name}: shape {tuple(shape)} does not match the manifest "
                          f"({want}); the bundle is inconsistent, write it again")
    if "item_id" not in items.columns or items["item_id"].dtype != pl.String:
        raise BundleError(f"{path}/items.parquet: no string column item_id; write the bundle "
                          "again")
    if not np.issubdtype(vectors.dtype, np.floating) or not np.isfinite(
            vectors.sum(dtype=np.float64)) or not math.isfinite(float(bias.sum())):
        raise BundleError(f"{path}/embeddings.npy: holds non-finite or non-float values; "
                          "write the bundle again")
    if rows is not None and (not np.issubdtype(rows.dtype, np.integer) or (len(rows) and (
            int(rows.min()) < 0 or int(rows.max()) >= len(vectors)))):
        raise BundleError(f"{path}/{ROWS_FILE}: holds rows outside the {len(vectors)} stored "
                          "vectors; write the bundle again")


def load_cooccurrence(path: str | Path) -> sp.csr_matrix:
    part = Path(path) / "cooccurrence.npz"
    if not part.is_file():
        raise BundleError(f"{path}: bundle has no co-occurrence matrix")
    return sp.load_npz(part).tocsr()


def load_encoder_state(path: str | Path) -> dict:
    from safetensors.torch import load_file  # torch: reading vectors must not need it

    part = Path(path) / "encoder.safetensors"
    if not part.is_file():
        raise BundleError(f"{path}: bundle has no encoder weights")
    return load_file(str(part))
