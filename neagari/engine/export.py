"""Write a Qwen3 Q1_0 GGUF from float weights: every linear weight quantized with llama.cpp's
reference rule (embeddings and LM head included, as in Bonsai), norms kept F32. The same writer
makes float files (F32 or F16 linear weights), which :mod:`neagari.engine.requantize` rounds to
Q1_0 post hoc."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from neagari.engine import q1
from neagari.engine.config import ModelConfig, tensor_names
from neagari.engine.gguf_io import TYPE_F16, TYPE_F32, write_gguf

NORM_SUFFIXES = ("_norm.weight",)
# general.file_type of a float file by the type of its linear weights (llama.cpp's LLAMA_FTYPE_*)
FLOAT_FILE_TYPES = {TYPE_F32: 0, TYPE_F16: 1}  # ALL_F32, MOSTLY_F16


def is_norm(name: str) -> bool:
    return name.endswith(NORM_SUFFIXES)


def write_model(path: str | os.PathLike, cfg: ModelConfig, weights: Mapping[str, np.ndarray],
                tokenizer_metadata: Mapping[str, object], name: str = "neagari-model",
                extra_metadata: Mapping[str, str] | None = None, quantize: bool = True,
                float_type: int = TYPE_F32) -> Path:
    """weights: tensor name (llama.cpp naming) → float array in PyTorch shape (out, in), or
    uint8 Q1_0 blocks (out, in / 128 * 18) written as they are.

    quantize=False writes a float file: linear weights as ``float_type`` (TYPE_F32 or TYPE_F16),
    norms F32; Q1_0 blocks are refused there (a float file holds the weights before rounding).

    Raises ValueError naming any missing or misshapen tensor before writing anything.
    """
    from neagari.engine.tokenizer import write_tokenizer_metadata

    expected = tensor_names(cfg)
    missing = [n for n in expected if n not in weights]
    if missing:
        raise ValueError(f"missing tensors: {missing[:5]}{' …' if len(missing) > 5 else ''}")
    if not quantize:
        if float_type not in FLOAT_FILE_TYPES:
            raise ValueError(f"float_type {float_type}: a float file holds F32 ({TYPE_F32}) or F16 ({TYPE_F16}) "
                             "linear weights")
        blocks = [n for n in expected if np.asarray(weights[n]).dtype == np.uint8]
        if blocks:
            raise ValueError(f"a float file cannot hold Q1_0 blocks, given for {blocks[:3]}"
                             f"{' …' if len(blocks) > 3 else ''}: pass the float weights")
    tok_count = len(tokenizer_metadata["tokenizer.ggml.tokens"])
    if tok_count != cfg.vocab_size:
        raise ValueError(f"tokenizer has {tok_count} tokens but the model's vocab_size is {cfg.vocab_size}")

    def tensors():
        for n in expected:
            w = np.asarray(weights[n])
            if w.dtype == np.uint8:  # already Q1_0 blocks (QAT export: the training forward's own bits)
                yield n, w, q1.GGML_TYPE_Q1_0
            elif is_norm(n):
                yield n, w.astype(np.float32), TYPE_F32
            elif not quantize:
                yield n, w.astype(np.float32), float_type  # F16: rounded once, by the writer
            else:
                yield n, q1.quantize(w.astype(np.float32)), q1.GGML_TYPE_Q1_0

    def add_metadata(writer):
        writer.add_name(name)
        writer.add_file_type(q1.LLAMA_FTYPE_MOSTLY_Q1_0 if quantize else FLOAT_FILE_TYPES[float_type])
        cfg.add_to_gguf(writer)
        write_tokenizer_metadata(writer, dict(tokenizer_metadata))
        for k, v in (extra_metadata or {}).items():
            writer.add_string(k, str(v))

    return write_gguf(path, "qwen3", add_metadata, tensors())
