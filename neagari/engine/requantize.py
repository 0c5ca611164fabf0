"""Post-hoc Q1_0 rounding of a float GGUF, as llama.cpp's quantizer does it.

``quantize_gguf(src, dst)`` reads a GGUF whose linear weights are float (F32, F16 or BF16), rounds
every linear weight (embeddings and LM head included; every tensor but the norms) with llama.cpp's
reference rule (:func:`neagari.engine.q1.quantize`: ``d = fp16(mean |w|)`` per block of 128,
``bit = w >= 0``) and writes the result with every metadata key of ``src`` (architecture,
tokenizer, chat template, training keys) unchanged but ``general.file_type``, which becomes
LLAMA_FTYPE_MOSTLY_Q1_0. The norms are copied byte for byte in their type. The tensor bytes equal
those of llama.cpp's ``llama_model_quantize`` to Q1_0 of the same file (``pure``, token embedding
and output tensor Q1_0 too; tests/test_shipped_models.py).

Everything is checked before a byte is written (``dst`` is not ``src``, every tensor can be
read, every weight to round is float, finite and has rows of whole blocks); the file is written
under a temporary name and renamed onto ``dst`` (:func:`neagari.engine.gguf_io.write_gguf`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neagari.files import same_file
from neagari.engine import q1
from neagari.engine.export import is_norm
from neagari.engine.gguf_io import (ARRAY, FLOAT_TENSOR_TYPES, TYPE_BF16, TYPE_F16, TYPE_F32, GGUFFile,
                                    write_gguf)

FILE_TYPE_KEY = "general.file_type"
ALIGNMENT_KEY = "general.alignment"
ARCHITECTURE_KEY = "general.architecture"


def is_rounded(name: str, shape: tuple[int, ...]) -> bool:
    """Whether a tensor is a linear weight that becomes Q1_0 (every matrix but the norms)."""
    return len(shape) == 2 and not is_norm(name)


def check_output(src: Path, dst: Path) -> None:
    """Refuse a ``dst`` that is ``src`` (also through a link or another spelling) or a directory."""
    if same_file(src, dst) or os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError(f"output {dst} is the input file {src}; write the Q1_0 model to another path")
    if dst.is_dir():
        raise ValueError(f"output {dst} is a directory; give the path of the file to write")


def _passthrough(gf: GGUFFile, name: str) -> tuple[np.ndarray, int]:
    """A tensor kept as it is: its values in the type it has (bytes unchanged)."""
    rec = gf.tensors[name]
    raw = gf.raw(name)
    if rec.ggml_type == q1.GGML_TYPE_Q1_0:
        return raw, q1.GGML_TYPE_Q1_0
    view = {TYPE_F32: "<f4", TYPE_F16: "<f2", TYPE_BF16: "<u2"}[rec.ggml_type]
    return raw.view(view).reshape(rec.shape), rec.ggml_type


def quantize_gguf(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write ``dst``: ``src`` with every linear weight rounded to Q1_0 (see the module docstring).

    Raises :class:`neagari.engine.gguf_io.GGUFFormatError` for a file that cannot be read and
    ValueError (one line, naming the file and tensor) for one that cannot be rounded.
    """
    import gguf

    src, dst = Path(src), Path(dst)
    check_output(src, dst)
    gf = GGUFFile(src)
    rounded: set[str] = set()
    for name, rec in gf.tensors.items():
        gf.require_tensor(name)  # a type we can read, rows of whole blocks
        if not is_rounded(name, rec.shape):
            continue
        if rec.ggml_type not in FLOAT_TENSOR_TYPES:
            raise ValueError(f"{src}: tensor {name!r} is {rec.type_name}, not float (F32, F16 or BF16): "
                             "only a float file is rounded to Q1_0")
        if rec.shape[-1] % q1.QK:
            raise ValueError(f"{src}: tensor {name!r} row length {rec.shape[-1]} is not a multiple of {q1.QK} "
                             "(a Q1_0 block)")
        gf.check_finite(name)
        rounded.add(name)
    if not rounded:
        raise ValueError(f"{src}: no linear weight to round (every tensor is a norm or not a matrix)")

    def add_metadata(writer):
        for key, value in gf.metadata.items():
            vtype, etype = gf.metadata_types[key]
            if key == ARCHITECTURE_KEY:
                continue  # the writer adds it from its arch argument
            if key == ALIGNMENT_KEY:
                writer.add_custom_alignment(int(value))  # the layout, too, follows the key
            elif key == FILE_TYPE_KEY:
                writer.add_file_type(q1.LLAMA_FTYPE_MOSTLY_Q1_0)
            else:
                writer.add_key_value(key, value, gguf.GGUFValueType(vtype),
                                     gguf.GGUFValueType(etype) if vtype == ARRAY else None)
        if FILE_TYPE_KEY not in gf.metadata:
            writer.add_file_type(q1.LLAMA_FTYPE_MOSTLY_Q1_0)

    def tensors():
        for name in gf.tensors:
            if name in rounded:
                yield name, q1.quantize(gf.dequantize(name)), q1.GGML_TYPE_Q1_0
            else:
                yield (name, *_passthrough(gf, name))

    return write_gguf(dst, gf.architecture, add_metadata, tensors())
