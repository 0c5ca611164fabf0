"""Null models for the search (PAPER.md §7.1.1): the same file with every MLP sign bit flipped
with probability 1/2. Scales, norms, attention and embeddings keep their bytes, so the null model
differs from the trained one only in what training put into the MLP signs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from neagari.engine import q1
from neagari.engine.config import MLP_PROJECTIONS
from neagari.engine.gguf_io import GGUFFile
from neagari.hashing import sha256_file


def randomize_mlp_signs(base: str | os.PathLike, out: str | os.PathLike, seed: int) -> str:
    """Write ``out``: ``base`` with its MLP sign bits XOR-ed by fair coin flips. Returns sha256."""
    base, out = Path(base), Path(out)
    f = GGUFFile(base)
    tensors = [r for r in f.tensors.values()
               if r.ggml_type == q1.GGML_TYPE_Q1_0 and r.name.split(".")[-2] in MLP_PROJECTIONS]
    if not tensors:
        raise ValueError(f"{base}: no Q1_0 MLP tensors to randomize")
    tmp = out.with_suffix(out.suffix + ".part")
    shutil.copyfile(base, tmp)
    mm = np.memmap(tmp, dtype=np.uint8, mode="r+")
    rng = np.random.Generator(np.random.PCG64(seed))
    for rec in sorted(tensors, key=lambda r: r.name):  # fixed order: the same seed, the same file
        blocks = mm[rec.offset : rec.offset + rec.nbytes].reshape(-1, q1.BLOCK_BYTES)
        blocks[:, q1.SIGN_BYTES] ^= rng.integers(0, 256, size=(blocks.shape[0], q1.QK // 8), dtype=np.uint8)
    mm.flush()
    del mm
    os.replace(tmp, out)
    return sha256_file(out)
