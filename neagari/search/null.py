"""Null models for the search (PAPER.md §7.1.1): the same file with what training put into its MLP
weights replaced by random draws. Scales, norms, attention and embeddings keep their bytes, so the
null model differs from the trained one only in the MLP weights' codes.

Q1_0 MLP tensors: every sign bit flipped with probability 1/2, so each weight is a fair coin
between -d and +d and every |w| is kept. Q2_0 MLP tensors, by ``mode`` (:data:`NULL_MODES`):

- ``uniform`` (the default): every weight's code drawn uniformly from the three ternary codes
  {-d, 0, +d} (codes 0, 1, 2), independently; a third of the weights are zero, whatever share
  training left at zero;
- ``keep_zeros``: every weight stays zero or nonzero as trained, and each nonzero ``±d`` weight is
  negated with probability 1/2 (a fair sign): the trained zero pattern is kept, as the 1-bit null
  keeps every |w|. On the bytes this is q2's ``negate`` mask ANDed with fair random bits.

Code 3 (+2d, which llama.cpp's quantizer never writes) is never drawn; under ``keep_zeros`` a
weight that has it keeps it, as every Q2_0 move does (negating +2d has no code). The mode changes
nothing on Q1_0 tensors.

Draws are a function of the seed alone: the Q1_0 tensors' in name order from ``PCG64(seed)``, one
random byte XOR-ed into each 8 sign bits (so a Q1_0 tensor's null bytes depend neither on the mode
nor on any Q2_0 tensor beside it); the Q2_0 tensors' in name order
from a stream of their own, ``PCG64([seed, 42])`` (42: Q2_0's GGML type).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from neagari.engine import q1, q2
from neagari.engine.config import MLP_PROJECTIONS
from neagari.engine.gguf_io import GGUFFile
from neagari.hashing import sha256_file

NULL_MODES = ("uniform", "keep_zeros")
DEFAULT_MODE = "uniform"
TERNARY_CODES = (q2.MINUS, q2.ZERO, q2.PLUS)  # what the uniform mode draws from

# per byte value: how many of its four 2-bit codes are code c (row c), for counting without unpacking
_CODE_COUNTS = np.stack([(q2.unpack_codes(np.arange(256, dtype=np.uint8)[:, None]) == c).sum(-1)
                         for c in range(4)]).astype(np.int64)  # (4, 256)


@dataclass(frozen=True)
class NullModel:
    """What :func:`randomize_mlp` wrote: the file's sha256 and what its Q2_0 MLP weights hold.

    Shares are of codes, over every Q2_0 MLP weight (None without Q2_0 MLP tensors):
    ``*_zero_share`` the share with the code of 0, ``*_plus_share`` the share of +d among the ±d
    codes (1/2 is a fair sign balance), ``*_two_share`` the share with code 3 (+2d). (A block of
    scale 0 is zero whatever its codes.)"""

    sha256: str
    mode: str
    q1_tensors: int
    q2_tensors: int
    q2_weights: int
    trained_zero_share: float | None = None
    null_zero_share: float | None = None
    trained_plus_share: float | None = None
    null_plus_share: float | None = None
    trained_two_share: float | None = None
    null_two_share: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def code_counts(code_bytes: np.ndarray) -> np.ndarray:
    """How many codes 0, 1, 2, 3 packed Q2_0 code bytes hold: int64 (4,)."""
    per_byte = np.bincount(np.asarray(code_bytes, dtype=np.uint8).reshape(-1), minlength=256)
    return _CODE_COUNTS @ per_byte


def _shares(counts: np.ndarray) -> tuple[float, float, float]:
    """(zero share, +d share of the ±d weights, +2d share) of code counts."""
    n = int(counts.sum())
    signed = int(counts[q2.MINUS] + counts[q2.PLUS])
    return (counts[q2.ZERO] / n, counts[q2.PLUS] / signed if signed else float("nan"), counts[q2.TWO] / n)


def randomize_q2_codes(code_bytes: np.ndarray, mode: str, rng: np.random.Generator) -> None:
    """Redraw, in place, the codes of Q2_0 code bytes (uint8 (n, 16), the blocks' bytes 2..17)."""
    if mode == "uniform":
        codes = rng.integers(0, len(TERNARY_CODES), size=(code_bytes.shape[0], q2.QK), dtype=np.uint8)
        code_bytes[...] = q2.pack_codes(codes)  # 0, 1, 2 are the codes of -d, 0, +d
    elif mode == "keep_zeros":
        coins = rng.integers(0, 256, size=code_bytes.shape, dtype=np.uint8)
        code_bytes ^= q2.code_mask(code_bytes, "negate") & coins  # ±d: sign bit XOR a fair coin
    else:
        raise ValueError(f"null mode {mode!r}: expected one of {', '.join(NULL_MODES)}")


def mlp_tensors(f: GGUFFile, ggml_type: int) -> list:
    """The MLP projections of one block type, in name order (the order the draws follow)."""
    return sorted((r for r in f.tensors.values()
                   if r.ggml_type == ggml_type and r.name.split(".")[-2] in MLP_PROJECTIONS), key=lambda r: r.name)


def randomize_mlp(base: str | os.PathLike, out: str | os.PathLike, seed: int, mode: str = DEFAULT_MODE) -> NullModel:
    """Write ``out``: ``base`` with its MLP weights randomized (module docstring)."""
    if mode not in NULL_MODES:
        raise ValueError(f"null mode {mode!r}: expected one of {', '.join(NULL_MODES)}")
    base, out = Path(base), Path(out)
    f = GGUFFile(base)
    t1, t2 = mlp_tensors(f, q1.GGML_TYPE), mlp_tensors(f, q2.GGML_TYPE)
    if not t1 and not t2:
        raise ValueError(f"{base}: no Q1_0 or Q2_0 MLP tensors to randomize")
    tmp = out.with_suffix(out.suffix + ".part")
    shutil.copyfile(base, tmp)
    try:
        mm = np.memmap(tmp, dtype=np.uint8, mode="r+")
        rng = np.random.Generator(np.random.PCG64(seed))
        for rec in t1:
            blocks = mm[rec.offset : rec.offset + rec.nbytes].reshape(-1, q1.BLOCK_BYTES)
            blocks[:, q1.SIGN_BYTES] ^= rng.integers(0, 256, size=(blocks.shape[0], q1.QK // 8), dtype=np.uint8)
        rng = np.random.Generator(np.random.PCG64([seed, q2.GGML_TYPE]))
        before, after = np.zeros(4, np.int64), np.zeros(4, np.int64)
        for rec in t2:
            blocks = mm[rec.offset : rec.offset + rec.nbytes].reshape(-1, q2.BLOCK_BYTES)
            codes = blocks[:, q2.CODE_BYTES]  # a view into the map: written in place
            before += code_counts(codes)
            randomize_q2_codes(codes, mode, rng)
            after += code_counts(codes)
        mm.flush()
        del mm
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    shares = {}
    if t2:
        for side, counts in (("trained", before), ("null", after)):
            zero, plus, two = _shares(counts)
            shares.update({f"{side}_zero_share": float(zero), f"{side}_plus_share": float(plus),
                           f"{side}_two_share": float(two)})
    return NullModel(sha256_file(out), mode, len(t1), len(t2), int(before.sum()), **shares)


def randomize_mlp_signs(base: str | os.PathLike, out: str | os.PathLike, seed: int,
                        mode: str = DEFAULT_MODE) -> str:
    """:func:`randomize_mlp`, returning the sha256 of ``out`` alone."""
    return randomize_mlp(base, out, seed, mode).sha256
