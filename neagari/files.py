"""File helpers shared across the package: atomic replacement and same-file tests (no neagari imports)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (where the platform can open and sync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a directory
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)``, fsync it, then ``os.replace`` it onto ``path``: a reader sees the old file or
    the new one, never a partial one. The temporary name is fixed (``<name>.tmp``), so a write after
    a kill replaces the partial file instead of leaving it beside."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are the same file (same device and inode: links, ``./x``, ...)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
