"""Q2_0: the ternary GGUF block format (GGML type 42), packing and the moves on ternary groups.

A block holds 64 weights in 18 bytes: a little-endian FP16 scale ``d`` then 16 bytes of 2-bit
codes. Weight ``j`` of a block has code ``q = (byte[j // 4] >> 2 * (j % 4)) & 3`` (the lowest two
bits hold the first weight) and the value ``(q - 1) * d``: code 0 is ``-d``, 1 is 0, 2 is ``+d``
and 3 is ``+2d``. llama.cpp's quantizer never writes code 3 (every ``|w| <= d``), but
dequantizes it as ``+2d``, and so do we. Blocks run along a row of the PyTorch-shaped
``(out, in)`` matrix, so group ``g`` of a tensor is row ``g // (in / 64)``, columns
``(g % (in / 64)) * 64`` onwards. This is ggml's ``block_q2_0`` with ``QK2_0 = 64`` in the
pinned llama.cpp (llama-cpp-python 0.3.36); a llama.cpp built with 128-weight Q2_0 blocks of 34
bytes (PrismML's) writes files of another layout under the same type id, which the reader refuses
in one line naming both layouts (neagari.engine.gguf_io).

Quantization is llama.cpp's ``quantize_row_q2_0_ref`` (what ``llama_model_quantize`` runs without
an importance matrix): ``amax = max |w|`` over the block in float32, ``d = fp16(amax)``, and each
code from the float32 ``amax`` (not the rounded ``d``): ``q = roundf(w * (1 / amax))``, a float32
product rounded half away from zero, clamped to -1..2, stored as ``q + 1``. An all-zero block has
``d = 0`` and every code 1.

The moves act on one block and are each self-inverse. The three group moves are the
transpositions of the code values {-1, 0, +1}, applied to every weight of the group: ``negate``
swaps -1 and +1 (``w -> -w``, the ternary analogue of Q1_0's sign inversion), ``zero_plus`` swaps
0 and +1 and ``zero_minus`` swaps 0 and -1 (these two change the zero pattern). Transpositions
generate every permutation of the three values, and each is an involution on the bytes: its XOR
mask is read from bits the move leaves unchanged (see :func:`code_mask`). Code 3 is a fixed point
of all three. ``scale`` flips one bit of the FP16 scale, which sits where Q1_0's does.
"""

from __future__ import annotations

import numpy as np

from neagari.engine.blocks import addressing
from neagari.engine.q1 import SCALE_BITS, scale_bit_byte  # the same FP16 scale in bytes 0-1

NAME = "Q2_0"
GGML_TYPE = GGML_TYPE_Q2_0 = 42
LLAMA_FTYPE = LLAMA_FTYPE_MOSTLY_Q2_0 = 41  # general.file_type of a file whose linear weights are Q2_0
QK = 64  # weights per block
BLOCK_BYTES = 18  # 2 (fp16 scale) + 16 (2-bit codes)
SCALE_BYTES = slice(0, 2)  # the block's FP16 scale d, little-endian
CODE_BYTES = slice(2, BLOCK_BYTES)  # its 64 codes, four to a byte
MINUS, ZERO, PLUS, TWO = 0, 1, 2, 3  # code points of -d, 0, +d, +2d
GROUP_MOVES = ("negate", "zero_plus", "zero_minus")  # the transpositions (-1 +1), (0 +1), (0 -1)
MOVES = GROUP_MOVES + ("scale",)
GROUP_MOVE = "negate"  # the group move a search makes by default
_LOW = 0x55  # the low bit of each of a byte's four codes


n_groups, group_location, block_bytes = addressing("Q2_0", QK, BLOCK_BYTES)


# ---------------------------------------------------------------------------- the block layout


def code_mask(codes, kind: str):
    """The XOR mask that applies group move ``kind`` to code bytes (NumPy or torch uint8).

    Each mask depends only on bits the move keeps, so the same mask undoes it:
    ``negate`` flips the high bit of codes whose low bit is 0 (00 <-> 10);
    ``zero_minus`` flips the low bit of codes whose high bit is 0 (00 <-> 01);
    ``zero_plus`` flips both bits of codes whose two bits differ (01 <-> 10).
    """
    if kind == "negate":
        return (~codes & _LOW) << 1
    if kind == "zero_minus":
        return (~codes >> 1) & _LOW
    if kind == "zero_plus":
        differ = (codes ^ (codes >> 1)) & _LOW
        return differ | (differ << 1)
    raise ValueError(f"{kind!r} is not a Q2_0 group move ({', '.join(GROUP_MOVES)})")


def apply_move(block, kind: str, bit: int | None = None) -> None:
    """One move, in place on an 18-byte block (a NumPy uint8 array or a torch uint8 tensor view):
    a group move of :data:`GROUP_MOVES`, or ``scale`` flipping bit ``bit`` of the FP16 scale."""
    if kind == "scale":
        byte, mask = scale_bit_byte(bit)
        block[byte] ^= mask
    else:
        codes = block[CODE_BYTES]
        codes ^= code_mask(codes, kind)


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Codes uint8 (..., 64 k) in 0..3 → bytes uint8 (..., 16 k), weight j at bits 2 (j % 4)."""
    c = np.asarray(codes, dtype=np.uint8)
    return c[..., 0::4] | (c[..., 1::4] << 2) | (c[..., 2::4] << 4) | (c[..., 3::4] << 6)


def unpack_codes(qs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_codes`: bytes uint8 (..., n) → codes uint8 (..., 4 n)."""
    qs = np.asarray(qs, dtype=np.uint8)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)
    return ((qs[..., None] >> shifts) & 3).reshape(*qs.shape[:-1], -1)


def pack_blocks(d: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Q2_0 bytes from scales and codes.

    d: float (out, nb), rounded to FP16 here; codes: uint8 (out, nb, 64) in 0..3. Returns uint8
    (out, nb * 18).
    """
    out_f, nb = d.shape
    packed = np.empty((out_f, nb, BLOCK_BYTES), dtype=np.uint8)
    packed[..., SCALE_BYTES] = np.asarray(d).astype("<f2")[..., None].view(np.uint8)
    packed[..., CODE_BYTES] = pack_codes(codes)
    return packed.reshape(out_f, -1)


# ---------------------------------------------------------------------------- NumPy, file bytes


def quantize(w: np.ndarray) -> np.ndarray:
    """llama.cpp's reference rule (module docstring): d = fp16(max |w|), code = roundf(w / max |w|) + 1.

    w: finite float array (out, in) with in % 64 == 0. Returns uint8 (out, in / 64 * 18).
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("cannot quantize inf/NaN weights to Q2_0")
    out_f, in_f = w.shape
    n_groups((out_f, in_f))
    blocks = w.reshape(out_f, in_f // QK, QK)
    amax = np.abs(blocks).max(axis=-1)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(amax > 0, np.float32(1) / np.where(amax > 0, amax, np.float32(1)), np.float32(0))
        # 1 / amax overflows for a subnormal amax (d rounds to 0 there): such products are not
        # finite, and x86-64 llama.cpp stores them as code 0 (the C cast gives INT_MIN, clamped)
        v = blocks * inv.astype(np.float32)[..., None]  # float32, as the C loop multiplies
        # roundf: ties away from zero, exact in float64 for these float32 values
        q = np.trunc(v.astype(np.float64) + np.copysign(0.5, v))
        q = np.where(np.isfinite(v), q.clip(-1, 2), -1)
    return pack_blocks(amax, (q + 1).astype(np.uint8))


def dequantize(raw: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 blocks → float32 (out, in): weight = (code - 1) * d."""
    raw = np.asarray(raw, dtype=np.uint8)
    blocks = raw.reshape(-1, BLOCK_BYTES)
    d = blocks[:, SCALE_BYTES].copy().view("<f2").astype(np.float32)  # (n, 1)
    levels = unpack_codes(blocks[:, CODE_BYTES]).astype(np.float32) - 1  # (n, 64)
    w = levels * d
    if shape is None:
        shape = (raw.shape[0], raw.shape[1] // BLOCK_BYTES * QK) if raw.ndim == 2 else (1, w.size)
    return w.reshape(shape)


def move_group_bytes(raw: np.ndarray, group: int, kind: str, bit: int | None = None) -> None:
    """One move, in place on a flat uint8 view of one tensor (``kind`` as in :func:`apply_move`)."""
    apply_move(raw[block_bytes(group)], kind, bit)


# ---------------------------------------------------------------------------- torch, device state

# torch is imported inside these functions, as in q1: byte-level tools start faster without it.


def scales_torch(raw: "torch.Tensor") -> "torch.Tensor":
    """FP16 scales of uint8 blocks (..., n * 18) → float32 (..., n)."""
    import torch

    blocks = raw.reshape(*raw.shape[:-1], -1, BLOCK_BYTES)
    return blocks[..., SCALE_BYTES].contiguous().view(torch.float16).squeeze(-1).float()


def codes_torch(raw: "torch.Tensor") -> "torch.Tensor":
    """Codes of uint8 blocks (..., n * 18) → uint8 (..., n * 64) in 0..3."""
    import torch

    blocks = raw.reshape(*raw.shape[:-1], -1, BLOCK_BYTES)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=raw.device)
    codes = (blocks[..., CODE_BYTES].unsqueeze(-1) >> shifts) & 3  # (..., n, 16, 4)
    return codes.reshape(*raw.shape[:-1], -1)


def dequantize_torch(raw: "torch.Tensor", dtype: "torch.dtype | None" = None) -> "torch.Tensor":
    """uint8 (out, in / 64 * 18) → (out, in) weights of ``dtype`` (default fp32)."""
    import torch

    dtype = dtype or torch.float32
    d = scales_torch(raw)  # (out, nb)
    levels = codes_torch(raw).reshape(*d.shape, QK).float() - 1  # (out, nb, 64)
    w = levels * d.unsqueeze(-1)  # exact in fp32: levels are -1, 0, 1, 2
    return w.reshape(raw.shape[0], -1).to(dtype)


def group_weights_torch(block: "torch.Tensor", dtype: "torch.dtype") -> "torch.Tensor":
    """One 18-byte block (uint8 tensor) → its 64 weights."""
    return dequantize_torch(block.reshape(1, BLOCK_BYTES), dtype).reshape(QK)
