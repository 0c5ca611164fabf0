"""sha256 of files and byte strings (standard library only; every layer may use it)."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 22  # 4 MiB reads: large model files are hashed without being held in memory


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
