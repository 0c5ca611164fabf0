"""Write a Qwen3 Q1_0 (or Q2_0) GGUF from float weights: every linear weight quantized with
llama.cpp's reference rule (embeddings and LM head included, as in Bonsai), norms kept F32. The
same writer makes float files (F32 or F16 linear weights), which :mod:`neagari.engine.requantize`
rounds post hoc, and files that mix types tensor by tensor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from neagari.engine import q1
from neagari.engine.config import ModelConfig, tensor_names
from neagari.engine.gguf_io import TYPE_F16, TYPE_F32, write_gguf
from neagari.engine.quants import BLOCK_FORMATS, block_format

NORM_SUFFIXES = ("_norm.weight",)
# general.file_type of a float file by the type of its linear weights (llama.cpp's LLAMA_FTYPE_*)
FLOAT_FILE_TYPES = {TYPE_F32: 0, TYPE_F16: 1}  # ALL_F32, MOSTLY_F16


def is_norm(name: str) -> bool:
    return name.endswith(NORM_SUFFIXES)


def write_model(path: str | os.PathLike, cfg: ModelConfig, weights: Mapping[str, np.ndarray],
                tokenizer_metadata: Mapping[str, object], name: str = "neagari-model",
                extra_metadata: Mapping[str, str] | None = None, quantize: bool = True,
                float_type: int = TYPE_F32, block_type: int = q1.GGML_TYPE,
                tensor_types: Mapping[str, int] | None = None) -> Path:
    """weights: tensor name (llama.cpp naming) → float array in PyTorch shape (out, in), or
    uint8 blocks of the tensor's block type (out, nbytes), written as they are.

    block_type: the format quantized linear weights take (Q1_0 or Q2_0); ``general.file_type``
    is its. quantize=False writes a float file: linear weights as ``float_type`` (TYPE_F32 or
    TYPE_F16), norms F32; blocks are refused there (a float file holds the weights before
    rounding). tensor_types: linear tensor name → its type where it differs (another block
    format, F32 or F16), for files of mixed types.

    Raises ValueError naming any missing or misshapen tensor before writing anything.
    """
    from neagari.engine.tokenizer import write_tokenizer_metadata

    expected = tensor_names(cfg)
    tensor_types = dict(tensor_types or {})
    if block_format(block_type) is None:
        known = ", ".join(f"{fmt.NAME} ({t})" for t, fmt in BLOCK_FORMATS.items())
        raise ValueError(f"block_type {block_type} is not a block format: {known}")
    unknown = sorted(set(tensor_types) - {n for n in expected if not is_norm(n)})
    if unknown:
        raise ValueError(f"tensor_types names tensors that are not linear weights of this model: {unknown[:3]}")
    odd = {n: t for n, t in tensor_types.items() if block_format(t) is None and t not in FLOAT_FILE_TYPES}
    if odd:
        raise ValueError(f"tensor_types: {odd} are neither block formats nor F32/F16")
    missing = [n for n in expected if n not in weights]
    if missing:
        raise ValueError(f"missing tensors: {missing[:5]}{' …' if len(missing) > 5 else ''}")
    if not quantize:
        if float_type not in FLOAT_FILE_TYPES:
            raise ValueError(f"float_type {float_type}: a float file holds F32 ({TYPE_F32}) or F16 ({TYPE_F16}) "
                             "linear weights")
        blocks = [n for n in expected if np.asarray(weights[n]).dtype == np.uint8]
        if blocks:
            raise ValueError(f"a float file cannot hold Q1_0 blocks, nor Q2_0 ones, given for {blocks[:3]}"
                             f"{' …' if len(blocks) > 3 else ''}: pass the float weights")
    tok_count = len(tokenizer_metadata["tokenizer.ggml.tokens"])
    if tok_count != cfg.vocab_size:
        raise ValueError(f"tokenizer has {tok_count} tokens but the model's vocab_size is {cfg.vocab_size}")

    def tensors():
        for n in expected:
            w = np.asarray(weights[n])
            t = tensor_types.get(n, block_type if quantize else float_type)
            fmt = block_format(t)
            if w.dtype == np.uint8:  # already blocks (QAT export: the training forward's own bits)
                if fmt is None:
                    raise ValueError(f"{n}: uint8 blocks given for a tensor of float type {t}")
                yield n, w, t
            elif is_norm(n):
                yield n, w.astype(np.float32), TYPE_F32
            elif fmt is None:
                yield n, w.astype(np.float32), t  # F16: rounded once, by the writer
            else:
                yield n, fmt.quantize(w.astype(np.float32)), t

    def add_metadata(writer):
        writer.add_name(name)
        writer.add_file_type(block_format(block_type).LLAMA_FTYPE if quantize else FLOAT_FILE_TYPES[float_type])
        cfg.add_to_gguf(writer)
        write_tokenizer_metadata(writer, dict(tokenizer_metadata))
        for k, v in (extra_metadata or {}).items():
            writer.add_string(k, str(v))

    return write_gguf(path, "qwen3", add_metadata, tensors())
