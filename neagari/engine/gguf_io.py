"""GGUF files: one memory map, zero-copy tensor views, loud errors; and a writer.

Parsing is gguf-py's ``GGUFReader``; what we add is validation that turns every malformed input
into a one-line :class:`GGUFFormatError`, the PyTorch-order shapes, dequantization of the types
our models use, and the file hash that patches and provenance records pin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable

import numpy as np

from neagari.engine import q1
from neagari.hashing import sha256_file

GGUF_MAGIC = b"GGUF"
# GGML type ids we read (gguf.GGMLQuantizationType values).
TYPE_F32, TYPE_F16, TYPE_BF16 = 0, 1, 30
SUPPORTED_TYPES = {TYPE_F32: "F32", TYPE_F16: "F16", TYPE_BF16: "BF16", q1.GGML_TYPE_Q1_0: "Q1_0"}


class GGUFFormatError(ValueError):
    """The file is not a GGUF model this project can read; the message says why, in one line."""


@dataclass(frozen=True)
class TensorRecord:
    name: str
    ggml_type: int
    shape: tuple[int, ...]  # PyTorch order: (out, in) for matrices
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return SUPPORTED_TYPES.get(self.ggml_type, f"type {self.ggml_type}")


def _field_value(field) -> Any:
    value = field.contents()
    if isinstance(value, np.generic):
        value = value.item()
    return value


class GGUFFile:
    """A parsed GGUF file. ``metadata`` maps key → Python value; ``tensors`` name → record."""

    def __init__(self, path: str | os.PathLike):
        import gguf  # deferred: importing gguf-py costs ~0.3 s

        self.path = Path(path)
        if not self.path.is_file():
            raise GGUFFormatError(f"{self.path}: no such file")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise GGUFFormatError(f"{self.path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        try:
            reader = gguf.GGUFReader(self.path, "r")
        except Exception as e:  # gguf-py raises assorted errors on damaged headers
            raise GGUFFormatError(f"{self.path}: damaged or truncated GGUF header ({type(e).__name__}: {e})") from None
        self._reader = reader
        self.metadata = MappingProxyType({name: _field_value(fl) for name, fl in reader.fields.items()
                                          if not name.startswith("GGUF.")})
        tensors: dict[str, TensorRecord] = {}
        for t in reader.tensors:
            shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # GGUF [in, out] → (out, in)
            rec = TensorRecord(t.name, int(t.tensor_type), shape, int(t.data_offset), int(t.n_bytes))
            if rec.offset + rec.nbytes > size:
                raise GGUFFormatError(f"{self.path}: truncated file: tensor {t.name} ends at byte "
                                      f"{rec.offset + rec.nbytes}, file has {size}")
            tensors[t.name] = rec
        self.tensors = MappingProxyType(tensors)
        self._sha256: str | None = None

    # ------------------------------------------------------------------ access
    @property
    def architecture(self) -> str:
        return str(self.require_key("general.architecture"))

    def require_key(self, key: str) -> Any:
        if key not in self.metadata:
            raise GGUFFormatError(f"{self.path}: missing required metadata key {key!r}")
        return self.metadata[key]

    def require_tensor(self, name: str) -> TensorRecord:
        if name not in self.tensors:
            raise GGUFFormatError(f"{self.path}: missing required tensor {name!r}")
        rec = self.tensors[name]
        if rec.ggml_type not in SUPPORTED_TYPES:
            raise GGUFFormatError(f"{self.path}: tensor {name!r} has unsupported type {rec.ggml_type} "
                                  f"(supported: {', '.join(SUPPORTED_TYPES.values())})")
        if rec.ggml_type == q1.GGML_TYPE_Q1_0 and rec.shape[-1] % q1.QK:
            raise GGUFFormatError(f"{self.path}: tensor {name!r} row length {rec.shape[-1]} is not a "
                                  f"multiple of {q1.QK}")
        return rec

    def raw(self, name: str) -> np.ndarray:
        """Zero-copy uint8 view of a tensor's bytes, shaped (rows, bytes per row)."""
        rec = self.require_tensor(name)
        rows = int(np.prod(rec.shape[:-1])) if len(rec.shape) > 1 else 1
        flat = self._reader.data[rec.offset : rec.offset + rec.nbytes]
        return flat.reshape(rows, rec.nbytes // rows)

    def dequantize(self, name: str) -> np.ndarray:
        """float32 array in PyTorch shape."""
        rec = self.require_tensor(name)
        raw = self.raw(name)
        if rec.ggml_type == q1.GGML_TYPE_Q1_0:
            w = q1.dequantize(raw)
        elif rec.ggml_type == TYPE_F32:
            w = raw.view("<f4").astype(np.float32)
        elif rec.ggml_type == TYPE_F16:
            w = raw.view("<f2").astype(np.float32)
        else:  # BF16: the high half of an fp32
            w = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        return w.reshape(rec.shape)

    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256

    def summary(self) -> dict[str, Any]:
        by_type: dict[str, int] = {}
        for rec in self.tensors.values():
            by_type[rec.type_name] = by_type.get(rec.type_name, 0) + 1
        return {"path": str(self.path), "architecture": self.metadata.get("general.architecture"),
                "n_tensors": len(self.tensors), "types": by_type,
                "bytes": self.path.stat().st_size, "sha256": self.sha256()}


def write_gguf(path: str | os.PathLike, arch: str, add_metadata, tensors: Iterable[tuple[str, np.ndarray, int]]) -> Path:
    """Write a GGUF file.

    add_metadata: callable(gguf.GGUFWriter) adding the key/values (typed writer calls).
    tensors: (name, array, ggml_type); Q1_0 arrays are uint8 (out, in / 128 * 18) blocks,
    F32/F16 arrays are float matrices in PyTorch shape.
    """
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    writer = gguf.GGUFWriter(tmp, arch)
    add_metadata(writer)
    for name, array, ggml_type in tensors:
        if ggml_type == q1.GGML_TYPE_Q1_0:
            writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.uint8),
                              raw_dtype=gguf.GGMLQuantizationType.Q1_0)
        elif ggml_type == TYPE_F32:
            writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
        elif ggml_type == TYPE_F16:
            writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float16))
        else:
            raise ValueError(f"cannot write tensor {name} of GGML type {ggml_type}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)  # never leave a half-written model under the final name
    return path
