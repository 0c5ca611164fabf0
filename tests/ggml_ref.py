"""ggml's own row quantizers and dequantizers, called through ctypes from the libggml-base that
llama-cpp-python ships: the independent reference for our block formats. ``ggml_get_type_traits``
is ggml's public table of them (ggml.h), so no internal symbol is named. Not collected by pytest.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest


class _Traits(ctypes.Structure):  # struct ggml_type_traits, ggml.h
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


_ROW_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)  # (src, dst, k)


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    llama_cpp = pytest.importorskip("llama_cpp")
    libs = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-base.*"))
    if not libs:
        pytest.skip("llama-cpp-python ships no libggml-base here")
    lib = ctypes.CDLL(str(libs[0]))
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    return lib


def traits(ggml_type: int) -> tuple[str, int, int]:
    """(ggml's type name, weights per block, bytes per block)."""
    t = _lib().ggml_get_type_traits(ggml_type).contents
    return t.type_name.decode(), int(t.blck_size), int(t.type_size)


def quantize_rows(ggml_type: int, w: np.ndarray) -> np.ndarray:
    """ggml's reference quantizer (``from_float_ref``) on float32 rows (out, in) → uint8 blocks."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    _, qk, size = traits(ggml_type)
    out = np.zeros((w.shape[0], w.shape[1] // qk * size), dtype=np.uint8)
    fn = _ROW_FN(_lib().ggml_get_type_traits(ggml_type).contents.from_float_ref)
    fn(w.ctypes.data, out.ctypes.data, w.size)
    return out


def dequantize_rows(ggml_type: int, raw: np.ndarray, in_features: int) -> np.ndarray:
    """ggml's dequantizer (``to_float``) on uint8 blocks (out, nbytes) → float32 (out, in)."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    out = np.zeros((raw.shape[0], in_features), dtype=np.float32)
    fn = _ROW_FN(_lib().ggml_get_type_traits(ggml_type).contents.to_float)
    fn(raw.ctypes.data, out.ctypes.data, out.size)
    return out
