"""What every GGUF block format shares: row-major blocks of QK weights along each row of the
PyTorch-shaped (out, in) matrix, BLOCK_BYTES bytes each. q1 (Q1_0) and q2 (Q2_0) take their
addressing functions from :func:`addressing`."""

from __future__ import annotations

from typing import Callable


def addressing(name: str, qk: int, block_nbytes: int) -> tuple[Callable, Callable, Callable]:
    """(n_groups, group_location, block_bytes) of a format of ``qk`` weights in ``block_nbytes`` bytes."""

    def n_groups(shape: tuple[int, int]) -> int:
        out_f, in_f = shape
        if in_f % qk:
            raise ValueError(f"row length {in_f} is not a multiple of {qk}")
        return out_f * in_f // qk

    def group_location(group: int, in_features: int) -> tuple[int, int]:
        per_row = in_features // qk
        return group // per_row, (group % per_row) * qk

    def block_bytes(group: int) -> slice:
        start = group * block_nbytes
        return slice(start, start + block_nbytes)

    n_groups.__doc__ = f"Number of {name} blocks of a PyTorch-shaped (out, in) matrix."
    group_location.__doc__ = f"(row, first column) of {name} block ``group`` in an (out, in) matrix."
    block_bytes.__doc__ = (f"The {block_nbytes} bytes of {name} block ``group`` within a tensor's flat bytes "
                           "(blocks are row-major).")
    return n_groups, group_location, block_bytes
