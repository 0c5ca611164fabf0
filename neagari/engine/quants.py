"""The block formats of GGUF weights the engine reads, writes and moves, one module each (q1:
Q1_0, q2: Q2_0), looked up by GGML type id or by name.

Each module has the names of :data:`SHARED` (test_q2 checks it): NAME, GGML_TYPE, LLAMA_FTYPE,
QK (weights per block), BLOCK_BYTES, SCALE_BYTES, SCALE_BITS, MOVES (the move kinds a patch may
name for it), GROUP_MOVE (the one a search makes by default), and the functions n_groups,
group_location, block_bytes, scale_bit_byte, apply_move(block, kind, bit), quantize, dequantize,
scales_torch, dequantize_torch, group_weights_torch.
"""

from __future__ import annotations

from types import ModuleType

from neagari.engine import q1, q2

SHARED = ("NAME", "GGML_TYPE", "LLAMA_FTYPE", "QK", "BLOCK_BYTES", "SCALE_BYTES", "SCALE_BITS", "MOVES",
          "GROUP_MOVE", "n_groups", "group_location", "block_bytes", "scale_bit_byte", "apply_move", "quantize",
          "dequantize", "scales_torch", "dequantize_torch", "group_weights_torch")
BLOCK_FORMATS: dict[int, ModuleType] = {q1.GGML_TYPE: q1, q2.GGML_TYPE: q2}
BY_NAME: dict[str, ModuleType] = {fmt.NAME: fmt for fmt in BLOCK_FORMATS.values()}


def block_format(ggml_type: int) -> ModuleType | None:
    """The module of a block-quantized GGML type, None for any other type (a float one)."""
    return BLOCK_FORMATS.get(ggml_type)


def format_named(name: str) -> ModuleType:
    """The module of a format name, any case ("q2_0", "Q2_0")."""
    fmt = BY_NAME.get(name.upper())
    if fmt is None:
        raise ValueError(f"unknown block format {name!r} (known: {', '.join(BY_NAME)})")
    return fmt
