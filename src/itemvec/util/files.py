"""Crash-safe file writes shared by every writer: atomic files, checksums, directory swaps.

A reader must never see half a file or half a bundle: files are written to a temp sibling,
fsynced and renamed; directories are staged next to their target and swapped in one step.
Temp files and directories are created private (0600/0700) and opened up to what the umask
allows (0644/0755 under umask 022) before the rename, so a service account can read them.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

from itemvec.util.errors import ItemvecError, NoSpaceError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _umask_now() -> int:
    """The process umask, read without changing it (Linux ``/proc``); elsewhere the value read
    once at import, as setting it to read it races with other threads."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT


def _umask_once() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_once()


def file_mode() -> int:
    """Mode of a new file as ``open()`` would make it: 0666 less the umask."""
    return 0o666 & ~_umask_now()


def dir_mode() -> int:
    """Mode of a new directory as ``mkdir`` would make it: 0777 less the umask."""
    return 0o777 & ~_umask_now()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename: readers never see half a file.
    A full disk is one ``NoSpaceError`` naming the path and the bytes needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # --out new/dir/file.jsonl just works
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), file_mode())  # mkstemp makes 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno in NO_SPACE:
            raise out_of_space(path, len(data)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def out_of_space(path: Path, needed: int) -> NoSpaceError:
    """The one-line error for a full disk: where, how much is needed and how much is free."""
    try:
        free = f"{size_text(shutil.disk_usage(_existing(path.parent)).free)} free"
    except OSError:
        free = "free space unknown"
    error = NoSpaceError(f"{path}: no space left on device writing it (needs about "
                         f"{size_text(needed)}, {free}); free space or write elsewhere")
    error.errno = errno.ENOSPC
    return error


def size_text(n: int) -> str:
    """Bytes for people: 812 B, 52.4 kB, 1.7 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(target: str | Path, option: str = "--out") -> None:
    """Fail now, in one line, when ``target`` (a file or directory to be created beside its
    siblings) cannot be written: training first and failing after it wastes the run."""
    target = Path(target)
    where = _existing(target.parent)
    if not where.is_dir():
        raise ItemvecError(f"{option} {target}: {where} is a file, not a directory; "
                           "choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".itemvec-probe-", dir=where)
    except OSError as exc:
        raise ItemvecError(f"{option} {target}: cannot write in {where} "
                           f"({exc.strerror or exc}); choose a writable directory") from None
    os.close(fd)
    os.unlink(probe)


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime, size): changes when the file is rewritten or renamed over; None if absent.
    Cheap enough to poll (the bundle watchers, the workers' generation file)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (bundle parts can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link ``source`` as ``target`` (no bytes copied); copy it where a link cannot be
    made (another file system, links unsupported) or would not give ``target`` what a new file
    gets: a link shares the inode, so its mode and owner too (a part of a bundle written under
    umask 077 would stay unreadable to the service reading the new one). True when linked."""
    try:
        info = os.stat(source)
        if stat.S_IMODE(info.st_mode) == file_mode() and info.st_uid == os.geteuid():
            os.link(source, target)
            return True
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise
    shutil.copyfile(source, target)
    os.chmod(target, file_mode())
    return False


def fsync_path(path: Path) -> None:
    """Flush a file or directory to disk; a directory makes its renames durable (power loss).

    Some file systems refuse to open or fsync directories: that only loses durability, so it
    is ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """Flush every entry of ``directory`` and the directory itself, before it is renamed."""
    for path in [*directory.iterdir(), directory]:
        fsync_path(path)


def swap_into_place(staging: Path, out: Path) -> None:
    """Replace directory ``out`` by ``staging``; ``out`` is never missing where the OS can swap."""
    if not out.exists():
        os.replace(staging, out)
        return
    if _exchange(staging, out):  # one atomic step: ``out`` is never missing
        shutil.rmtree(staging, ignore_errors=True)
        return
    retired = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
    os.replace(out, retired)
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
