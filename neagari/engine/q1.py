"""Q1_0: the 1-bit GGUF block format (GGML type 41), packing and the two search moves.

A block holds 128 weights in 18 bytes: a little-endian FP16 scale ``d`` then 16 bytes of sign
bits. Weight ``j`` of a block is ``+d`` if bit ``j % 8`` of byte ``j // 8`` is set, else ``-d``.
Blocks run along a row of the PyTorch-shaped ``(out, in)`` matrix, so group ``g`` of a tensor is
row ``g // (in / 128)``, columns ``(g % (in / 128)) * 128`` onwards.

Which bytes of a block hold what, and which bytes a move XORs, is written once (the block
layout section) and serves NumPy arrays and torch tensors alike. NumPy functions work on the
file's bytes (quantize, dequantize, byte-level moves for ``apply-patch``); the ``*_torch``
functions do the same on device tensors for the engine.
"""

from __future__ import annotations

import numpy as np

from neagari.engine.blocks import addressing

NAME = "Q1_0"
GGML_TYPE = GGML_TYPE_Q1_0 = 41
LLAMA_FTYPE = LLAMA_FTYPE_MOSTLY_Q1_0 = 40  # general.file_type of a file whose linear weights are Q1_0
QK = 128  # weights per block
BLOCK_BYTES = 18  # 2 (fp16 scale) + 16 (sign bits)
SCALE_BYTES = slice(0, 2)  # the block's FP16 scale d, little-endian
SIGN_BYTES = slice(2, BLOCK_BYTES)  # its 128 sign bits
SCALE_BITS = tuple(range(10))  # FP16 mantissa bits; the paper moves bits 4..9
MOVES = ("group", "scale")  # the sign inversion of a group, a flip of one scale bit
GROUP_MOVE = "group"


n_groups, group_location, block_bytes = addressing("Q1_0", QK, BLOCK_BYTES)


# ---------------------------------------------------------------------------- the block layout


def scale_bit_byte(bit: int) -> tuple[int, int]:
    """(byte within a block, XOR mask) of bit ``bit`` of the block's FP16 scale."""
    if bit is None or not 0 <= bit < 16:
        raise ValueError(f"scale bit {bit} outside 0..15")
    return SCALE_BYTES.start + bit // 8, 1 << (bit % 8)  # little-endian: low byte first


def xor_block(block, bit: int | None = None) -> None:
    """One move, in place on an 18-byte block (a NumPy uint8 array or a torch uint8 tensor view).

    ``bit`` None: invert the 128 sign bits (weights w -> -w). Otherwise flip that bit of the FP16
    scale. Both are self-inverse.
    """
    if bit is None:
        block[SIGN_BYTES] ^= 0xFF
    else:
        byte, mask = scale_bit_byte(bit)
        block[byte] ^= mask


def apply_move(block, kind: str, bit: int | None = None) -> None:
    """:func:`xor_block` by move name, the call q2 shares: ``group`` or ``scale`` (with ``bit``)."""
    if kind not in MOVES:
        raise ValueError(f"{kind!r} is not a Q1_0 move ({', '.join(MOVES)})")
    if kind == "scale":
        scale_bit_byte(bit)  # a scale move without a bit must not become a sign inversion
    xor_block(block, bit if kind == "scale" else None)


def move_bytes(group: int, bit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The bytes one move XORs, as (offsets int64 (n,) from the tensor's first byte, masks uint8
    (n,)); ``bit`` as in :func:`xor_block`. For applying many moves at once with
    ``np.bitwise_xor.at``, where a byte touched twice must cancel."""
    start = block_bytes(group).start
    if bit is None:
        offsets = np.arange(start + SIGN_BYTES.start, start + SIGN_BYTES.stop, dtype=np.int64)
        return offsets, np.full(offsets.shape, 0xFF, dtype=np.uint8)
    byte, mask = scale_bit_byte(bit)
    return np.array([start + byte], dtype=np.int64), np.array([mask], dtype=np.uint8)


def pack_blocks(d: np.ndarray, nonneg: np.ndarray) -> np.ndarray:
    """Q1_0 bytes from scales and signs.

    d: float (out, nb), rounded to FP16 here; nonneg: bool (out, nb, 128), True where a weight is
    +d. Returns uint8 (out, nb * 18).
    """
    out_f, nb = d.shape
    packed = np.empty((out_f, nb, BLOCK_BYTES), dtype=np.uint8)
    packed[..., SCALE_BYTES] = d.astype("<f2")[..., None].view(np.uint8)
    packed[..., SIGN_BYTES] = np.packbits(nonneg, axis=-1, bitorder="little")
    return packed.reshape(out_f, -1)


# ---------------------------------------------------------------------------- NumPy, file bytes


def quantize(w: np.ndarray) -> np.ndarray:
    """llama.cpp's reference rule: d = fp16(mean |w|) per block, bit = (w >= 0).

    w: float array (out, in) with in % 128 == 0. Returns uint8 (out, in / 128 * 18).
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {w.shape}")
    out_f, in_f = w.shape
    n_groups((out_f, in_f))
    blocks = w.reshape(out_f, in_f // QK, QK)
    # Sequential float32 accumulation, as llama.cpp's C loop does: numpy's pairwise sum can
    # differ in the last bit, which fp16 rounding occasionally exposes.
    acc = np.zeros(blocks.shape[:2], dtype=np.float32)
    for j in range(QK):  # over positions within a block, vectorized across all blocks
        acc += np.abs(blocks[..., j])
    d = acc / np.float32(QK)
    return pack_blocks(d, blocks >= 0)


def dequantize(raw: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Inverse of :func:`quantize`: uint8 blocks → float32 (out, in)."""
    raw = np.asarray(raw, dtype=np.uint8)
    blocks = raw.reshape(-1, BLOCK_BYTES)
    d = blocks[:, SCALE_BYTES].copy().view("<f2").astype(np.float32)  # (n, 1)
    bits = np.unpackbits(blocks[:, SIGN_BYTES], axis=-1, bitorder="little")  # (n, 128)
    w = np.where(bits.astype(bool), d, -d)
    if shape is None:
        shape = (raw.shape[0], raw.shape[1] // BLOCK_BYTES * QK) if raw.ndim == 2 else (1, w.size)
    return w.reshape(shape)


def xor_group_bytes(raw: np.ndarray, group: int) -> None:
    """Weight XOR, in place on a flat uint8 view of one tensor: invert the 128 sign bits."""
    xor_block(raw[block_bytes(group)])


def xor_scale_bit_bytes(raw: np.ndarray, group: int, bit: int) -> None:
    """Scale-mantissa XOR, in place on a flat uint8 view: flip bit ``bit`` of the FP16 scale."""
    xor_block(raw[block_bytes(group)], bit)


# ---------------------------------------------------------------------------- torch, device state

# torch is imported inside these functions: byte-level tools (apply-patch, audits) start ~2 s
# faster without it.


def scales_torch(raw: "torch.Tensor") -> "torch.Tensor":
    """FP16 scales of uint8 blocks (..., n * 18) → float32 (..., n)."""
    import torch

    blocks = raw.reshape(*raw.shape[:-1], -1, BLOCK_BYTES)
    return blocks[..., SCALE_BYTES].contiguous().view(torch.float16).squeeze(-1).float()


def signs_torch(raw: "torch.Tensor") -> "torch.Tensor":
    """Sign bits of uint8 blocks (..., n * 18) → bool (..., n * 128)."""
    import torch

    blocks = raw.reshape(*raw.shape[:-1], -1, BLOCK_BYTES)
    qs = blocks[..., SIGN_BYTES]
    shifts = torch.arange(8, dtype=torch.uint8, device=raw.device)
    bits = (qs.unsqueeze(-1) >> shifts) & 1  # (..., n, 16, 8)
    return bits.reshape(*raw.shape[:-1], -1).bool()


def dequantize_torch(raw: "torch.Tensor", dtype: "torch.dtype | None" = None) -> "torch.Tensor":
    """uint8 (out, in / 128 * 18) → (out, in) weights of ``dtype`` (default fp32)."""
    import torch

    dtype = dtype or torch.float32
    d = scales_torch(raw)  # (out, nb)
    signs = signs_torch(raw).reshape(*d.shape, QK)  # (out, nb, 128)
    w = torch.where(signs, d.unsqueeze(-1), -d.unsqueeze(-1))
    return w.reshape(raw.shape[0], -1).to(dtype)


def group_weights_torch(block: "torch.Tensor", dtype: "torch.dtype") -> "torch.Tensor":
    """One 18-byte block (uint8 tensor) → its 128 weights."""
    return dequantize_torch(block.reshape(1, BLOCK_BYTES), dtype).reshape(QK)
