"""Post-hoc rounding of a float GGUF to Q1_0 or Q2_0, as llama.cpp's quantizer does it.

``quantize_gguf(src, dst, ggml_type)`` reads a GGUF whose linear weights are float (F32, F16 or
BF16), rounds every linear weight (embeddings and LM head included; every tensor but the norms)
with llama.cpp's reference rule for the target type (Q1_0, the default,
:func:`neagari.engine.q1.quantize`: ``d = fp16(mean |w|)`` per block of 128, ``bit = w >= 0``;
Q2_0, :func:`neagari.engine.q2.quantize`: ``d = fp16(max |w|)`` per block of 64, ternary codes
``roundf(w / max |w|)``) and writes the result with every metadata key of ``src`` (architecture,
tokenizer, chat template, training keys) unchanged but ``general.file_type``, which becomes the
target's LLAMA_FTYPE_MOSTLY_*. The norms are copied byte for byte in their type. The tensor bytes
equal those of llama.cpp's ``llama_model_quantize`` to the same type of the same file (``pure``,
token embedding and output tensor of that type too; tests/test_shipped_models.py for Q1_0,
tests/test_q2_files.py for Q2_0).

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
from neagari.engine.quants import block_format
from neagari.engine.gguf_io import (ARRAY, FLOAT_TENSOR_TYPES, TYPE_BF16, TYPE_F16, TYPE_F32, GGUFFile,
                                    write_gguf)

FILE_TYPE_KEY = "general.file_type"
ALIGNMENT_KEY = "general.alignment"
ARCHITECTURE_KEY = "general.architecture"


def is_rounded(name: str, shape: tuple[int, ...]) -> bool:
    """Whether a tensor is a linear weight that is rounded (every matrix but the norms)."""
    return len(shape) == 2 and not is_norm(name)


def check_output(src: Path, dst: Path) -> None:
    """Refuse a ``dst`` that is ``src`` (also through a link or another spelling) or a directory."""
    if same_file(src, dst) or os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError(f"output {dst} is the input file {src}; write the rounded model to another path")
    if dst.is_dir():
        raise ValueError(f"output {dst} is a directory; give the path of the file to write")


def _passthrough(gf: GGUFFile, name: str) -> tuple[np.ndarray, int]:
    """A tensor kept as it is: its values in the type it has (bytes unchanged)."""
    rec = gf.tensors[name]
    raw = gf.raw(name)
    if block_format(rec.ggml_type) is not None:
        return raw, rec.ggml_type
    view = {TYPE_F32: "<f4", TYPE_F16: "<f2", TYPE_BF16: "<u2"}[rec.ggml_type]
    return raw.view(view).reshape(rec.shape), rec.ggml_type


def quantize_gguf(src: str | os.PathLike, dst: str | os.PathLike, ggml_type: int = q1.GGML_TYPE) -> Path:
    """Write ``dst``: ``src`` with every linear weight rounded to ``ggml_type`` (Q1_0 or Q2_0; see
    the module docstring).

    Raises :class:`neagari.engine.gguf_io.GGUFFormatError` for a file that cannot be read and
    ValueError (one line, naming the file and tensor) for one that cannot be rounded.
    """
    import gguf

    fmt = block_format(ggml_type)
    if fmt is None:
        raise ValueError(f"cannot round to GGML type {ggml_type}: the targets are Q1_0 and Q2_0")
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
                             f"only a float file is rounded to {fmt.NAME}")
        if rec.shape[-1] % fmt.QK:
            raise ValueError(f"{src}: tensor {name!r} row length {rec.shape[-1]} is not a multiple of {fmt.QK} "
                             f"(a {fmt.NAME} block)")
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
                writer.add_file_type(fmt.LLAMA_FTYPE)
            else:
                writer.add_key_value(key, value, gguf.GGUFValueType(vtype),
                                     gguf.GGUFValueType(etype) if vtype == ARRAY else None)
        if FILE_TYPE_KEY not in gf.metadata:
            writer.add_file_type(fmt.LLAMA_FTYPE)

    def tensors():
        for name in gf.tensors:
            if name in rounded:
                yield name, fmt.quantize(gf.dequantize(name)), fmt.GGML_TYPE
            else:
                yield (name, *_passthrough(gf, name))

    return write_gguf(dst, gf.architecture, add_metadata, tensors())
