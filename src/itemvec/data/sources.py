"""Where an event log's bytes come from: paths, globs and directories, and compressed files.

Users hand over logs the way they have them: several files (``orders_*.csv``), a directory
(a partitioned Parquet export), ``.gz`` or ``.zst`` files. ``expand_paths`` turns all of that
into a sorted list of sources (a directory of Parquet files is one source, read with its
``key=value`` partition columns); ``read_bytes`` decompresses.
"""

from __future__ import annotations

import glob
import gzip
import logging
from collections.abc import Iterable
from pathlib import Path

from itemvec.util.errors import DataError

logger = logging.getLogger(__name__)

COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_GLOB_CHARS = ("*", "?", "[")


def compression(path: Path) -> str | None:
    """'gzip', 'zstd' or None, from the file name."""
    return COMPRESSIONS.get(path.suffix.lower())


def plain_name(path: Path) -> str:
    """The file name without its compression suffix (``a.tsv.gz`` -> ``a.tsv``), lower case."""
    name = path.name.lower()
    return name[: -len(path.suffix)] if compression(path) else name


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed for ``.gz`` and ``.zst``."""
    kind = compression(path)
    try:
        if kind == "gzip":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        data = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read file ({getattr(exc, 'strerror', None) or exc})") \
            from None
    return _unzstd(data, path) if kind == "zstd" else data


def head_bytes(path: Path, size: int = 1 << 20) -> bytes:
    """The first ``size`` decompressed bytes (for sniffing a separator)."""
    if compression(path) == "gzip":
        with gzip.open(path, "rb") as fh:
            return fh.read(size)
    if compression(path) == "zstd":
        return read_bytes(path)[:size]
    with open(path, "rb") as fh:
        return fh.read(size)


def _unzstd(data: bytes, path: Path) -> bytes:
    try:
        import zstandard  # optional extra: pip install 'itemvec[zstd]'
    except ImportError:
        raise DataError(f"{path}: reading .zst files needs the zstandard package; "
                        "pip install 'itemvec[zstd]'") from None
    try:
        return zstandard.ZstdDecompressor().stream_reader(data).read()
    except zstandard.ZstdError as exc:
        raise DataError(f"{path}: not a valid zstd file ({exc})") from None


def expand_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files and globs and directories -> the sources to read, each once, in a stable order."""
    given = [paths] if isinstance(paths, str | Path) else list(paths)
    if not given:
        raise DataError("no event files given")
    found: list[Path] = []
    for raw in given:
        path = Path(raw)
        if path.is_dir():
            found.extend(directory_sources(path))
        elif not path.exists() and any(c in str(raw) for c in _GLOB_CHARS):
            found.extend(_glob(str(raw)))
        else:
            found.append(path)  # a missing file fails when read, naming it
    return list(dict.fromkeys(found))


def _glob(pattern: str) -> list[Path]:
    matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True))
    files = [m for m in matches if m.is_file() and not _hidden(m.name)]
    if not files:
        raise DataError(f"{pattern}: no files match this pattern")
    return files


def _hidden(name: str) -> bool:
    """Marker and metadata files of exports (_SUCCESS, .crc, _metadata) are not data."""
    return name.startswith((".", "_"))


def directory_sources(directory: Path) -> list[Path]:
    """A directory's data files (recursively); all Parquet: the directory itself, one source."""
    files = sorted(f for f in directory.rglob("*") if f.is_file()
                   and not any(_hidden(part) for part in f.relative_to(directory).parts))
    if not files:
        raise DataError(f"{directory}: directory holds no data files")
    if all(plain_name(f).endswith((".parquet", ".pq")) for f in files):
        return [directory]
    logger.info("%s: reading %d files", directory, len(files))
    return files


def describe(sources: list[Path]) -> str:
    """How logs name the input: the path, or the first paths and how many more."""
    if len(sources) <= 3:
        return ", ".join(map(str, sources))
    return f"{sources[0]}, {sources[1]} and {len(sources) - 2} more files"
