"""Atomic writes: an interrupted stage never leaves a half-written output, nor a missing one.

Every output is written to a temporary sibling (``.name.tmp-<pid>``) and moved into place:
a file with ``os.replace``, which is atomic on POSIX within one filesystem. A folder that
already exists (``features/``) cannot be replaced that way; it is *exchanged* with the new one
in one ``renameat2(RENAME_EXCHANGE)`` call where Linux offers it, so there is no moment without
``features/``. Elsewhere (other systems, filesystems without exchange) the old folder is renamed
to ``.name.old-<pid>`` and the new one renamed in: a kill between the two renames leaves the
output missing, and the next write into that folder (or :func:`sweep_stale`) renames the old one
back. A later stage therefore always finds either the previous complete output or the new one.

A kill (even ``kill -9``) leaves its temporaries behind, named with the dead process's id:
:func:`sweep_stale` removes those of processes that no longer run, and every atomic write runs
it on its folder first, so reruns clean up after killed runs.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

log = logging.getLogger(__name__)

#: Temporaries this package creates, each named with its creator's process id: atomic writes
#: (``.name.tmp-PID``), the old folder of a fallback swap (``.name.old-PID``) and DuckDB spill
#: folders (``.duckdb-PID-random``, see ``enrich/duck.py``).
_STALE = re.compile(r"^\.(?:(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)|duckdb-(?P<spill_pid>\d+)-.*)$")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; move it onto ``path`` on success.

    Works for files and directories. On an exception the temporary is removed
    and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent)
    tmp = _tmp_name(path)
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink() and tmp.is_dir():
            _swap_dirs(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _swap_dirs(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path`` (an existing folder), never leaving ``path`` missing where
    the system can exchange two names atomically."""
    if exchange(new, path):
        _remove(new)  # now holds the previous output
        return
    # os.replace cannot replace a non-empty directory: swap via a backup name (see the module docstring).
    backup = path.with_name(f".{path.name}.old-{os.getpid()}")
    _remove(backup)
    os.replace(path, backup)
    os.replace(new, path)
    _remove(backup)


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the names ``a`` and ``b`` (both must exist); False where the system cannot.

    Linux's ``renameat2(..., RENAME_EXCHANGE)`` (since 3.15, glibc 2.28) through ctypes: no
    library wraps it, and ``os`` has no binding. Any failure to exchange (another system, an old
    kernel or libc, a filesystem without support) returns False and changes nothing.
    """
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, f"exchange {a} and {b}: {os.strerror(err)}")


def _renameat2() -> Any:
    global _RENAMEAT2
    if _RENAMEAT2 is False:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _RENAMEAT2 = fn
        except (AttributeError, OSError):
            _RENAMEAT2 = None
    return _RENAMEAT2


_RENAMEAT2: Any = False  # not looked up yet


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` runs on this machine (this process counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that killed processes left in ``folder``; returns what was removed.

    Only entries named with the id of a process that no longer runs are touched, so a concurrent
    run's temporaries are safe. The old folder of an interrupted fallback swap (``.name.old-PID``)
    is renamed back to ``name`` when ``name`` is missing, rather than removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        m = _STALE.match(entry.name)
        if m is None or pid_alive(int(m["pid"] or m["spill_pid"])):
            continue
        target = folder / m["name"] if m["name"] else None
        if m["kind"] == "old" and target is not None and not target.exists() and not target.is_symlink():
            os.replace(entry, target)
            log.warning("%s: restored from %s (a swap was interrupted)", target, entry.name)
            continue
        _remove(entry)
        removed.append(entry)
    if removed:
        log.info("%s: removed %d temporaries of killed runs (%s)", folder, len(removed),
                 ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else ""))
    return removed


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def write_parquet(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a Polars frame to ``path`` atomically (zstd-compressed Parquet)."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd")
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return Path(path)
