"""GGUF files: one memory map, zero-copy tensor views, loud errors; and a writer.

The header is parsed by our own bounded parser, :func:`parse_header`, modelled on llama.cpp's
loader (``gguf_init_from_file_impl`` in ggml/src/gguf.cpp): every count, length, type, shape and
offset is checked before it is used, and no read or allocation can exceed what the file's size
allows, so a damaged or hostile header ends in one :class:`GGUFFormatError` naming the file and
the offending key or tensor, never in a hang, an unbounded allocation or a traceback. Its values
are those gguf-py's ``GGUFReader`` gives for the same file (``ReaderField.contents()``: Python
ints, floats, bools and strs, arrays as lists); gguf-py's reader itself is not used, as it walks
arrays element by element and follows nested arrays without bound.

Refused, beyond a read past the end of the file: a version other than 2 or 3 (or a big-endian
file); a key/value or tensor count, string length or array length that the bytes left could not
hold; an unknown value type; an array of arrays (llama.cpp refuses them too); a key or string
that is not UTF-8; a duplicate key or tensor name; ``general.alignment`` that is not a uint32
power of two; a tensor with an empty name or one of 64 bytes or more, no dimensions or more than
four, an unknown GGML type, a row length that is not a multiple of its type's block, an offset not
aligned to ``general.alignment``, bytes outside the file or overlapping another tensor's bytes.
A Q2_0 tensor (type 42) whose bytes, from its offset to the next tensor's (or the end of the
file), hold 128-weight blocks of 34 bytes but not the 64-weight blocks of 18 bytes of the pinned
llama.cpp's Q2_0 is refused as the other Q2_0 layout (PrismML's llama.cpp fork writes it under
the same type id), with one line saying so, before its size would be reported as an overlap.

On top: typed, range-checked metadata lookups (``int_key``, ``float_key``, ``str_key``), the
PyTorch-order shapes, finiteness checks (``check_finite``), dequantization of the types our models
use, and the file hash that patches and provenance records pin. Writing is gguf-py's
``GGUFWriter``.
"""

from __future__ import annotations

import bisect
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable

import numpy as np

from neagari.engine import q2
from neagari.engine.quants import BLOCK_FORMATS, block_format
from neagari.hashing import sha256_file

GGUF_MAGIC = b"GGUF"


class GGUFFormatError(ValueError):
    """The file is not a GGUF model this project can read; the message says why, in one line."""


SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 64  # GGML_MAX_NAME: a tensor name must be shorter

# ---------------------------------------------------------------------------- the header parser

# GGUF value types (gguf.GGUFValueType).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
VALUE_TYPE_NAMES = {UINT8: "uint8", INT8: "int8", UINT16: "uint16", INT16: "int16", UINT32: "uint32",
                    INT32: "int32", FLOAT32: "float32", BOOL: "bool", STRING: "string", ARRAY: "array",
                    UINT64: "uint64", INT64: "int64", FLOAT64: "float64"}
# scalar type → numpy dtype (little-endian); BOOL as numpy bool, as gguf-py reads it
SCALAR_DTYPES = {UINT8: np.dtype("<u1"), INT8: np.dtype("<i1"), UINT16: np.dtype("<u2"),
                 INT16: np.dtype("<i2"), UINT32: np.dtype("<u4"), INT32: np.dtype("<i4"),
                 FLOAT32: np.dtype("<f4"), BOOL: np.dtype(np.bool_), UINT64: np.dtype("<u8"),
                 INT64: np.dtype("<i8"), FLOAT64: np.dtype("<f8")}
INTEGER_TYPES = frozenset({UINT8, INT8, UINT16, INT16, UINT32, INT32, UINT64, INT64})
FLOAT_TYPES = frozenset({FLOAT32, FLOAT64})

# The other layout of GGML type 42 (PrismML's llama.cpp fork): 128 weights, an FP16 scale and 32
# bytes of 2-bit codes per block. Recognised only to be refused (see the module docstring).
Q2_0_G128_QK, Q2_0_G128_BYTES = 128, 34

# the smallest encodings, for bounding counts by the bytes left
_MIN_KV_BYTES = 8 + 4 + 1  # key length, type, a 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset


def ggml_type_sizes() -> dict[int, tuple[int, int]]:
    """GGML type id → (block size in elements, bytes per block): gguf-py's table, and ours for
    the block formats we read (gguf-py has no Q2_0)."""
    from gguf.constants import GGML_QUANT_SIZES  # deferred: importing gguf-py costs ~0.3 s

    sizes = {int(t): (int(b), int(s)) for t, (b, s) in GGML_QUANT_SIZES.items()}
    sizes.update({t: (fmt.QK, fmt.BLOCK_BYTES) for t, fmt in BLOCK_FORMATS.items()})
    return sizes


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ggml_type: int
    dims: tuple[int, ...]  # GGUF order: ne[0] (the row length) first
    offset: int  # absolute byte offset of the data in the file
    nbytes: int


@dataclass(frozen=True)
class Header:
    version: int
    alignment: int
    metadata: dict[str, Any]
    types: dict[str, tuple[int, int | None]]  # key → (value type, array element type or None)
    tensors: list[TensorInfo]
    data_offset: int  # start of the data section (after the tensor infos, aligned)


class _Cursor:
    """Reads little-endian values from a buffer; every read is checked against the buffer's end."""

    def __init__(self, buf, size: int, path: Path):
        self.buf, self.size, self.path, self.pos = buf, size, path, 0
        self.where = "the header"

    def fail(self, what: str) -> GGUFFormatError:
        return GGUFFormatError(f"{self.path}: {what}")

    def left(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.left():
            raise self.fail(f"truncated GGUF header: {what} of {self.where} needs {n} bytes at byte {self.pos}, "
                            f"the file has {self.left()} left")

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v[0] if len(v) == 1 else v

    def u32(self, what: str) -> int:
        return self.unpack("<I", what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", what)

    def raw(self, n: int, what: str) -> bytes:
        self.need(n, what)
        b = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return b

    def string(self, what: str) -> str:
        n = self.u64(f"{what} length")
        if n > self.left():
            raise self.fail(f"truncated or damaged GGUF header: {what} of {self.where} claims {n} bytes at byte {self.pos}, "
                            f"the file has {self.left()} left")
        b = self.raw(n, what)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"damaged GGUF header: {what} of {self.where} at byte {self.pos - n} "
                            "is not valid UTF-8") from None


def _value(cur: _Cursor, vtype: int, what: str):
    """One value of a scalar or string type (what gguf-py's contents() gives)."""
    if vtype == STRING:
        return cur.string(what)
    dt = SCALAR_DTYPES[vtype]
    cur.need(dt.itemsize, what)
    v = np.frombuffer(cur.buf, dt, 1, cur.pos).tolist()[0]
    cur.pos += dt.itemsize
    return v


def _array(cur: _Cursor, key: str) -> tuple[list, int]:
    etype = cur.u32("array element type")
    if etype == ARRAY:
        raise cur.fail(f"damaged GGUF header: metadata key {key!r} is an array of arrays "
                       "(nested arrays are not supported)")
    if etype not in VALUE_TYPE_NAMES:
        raise cur.fail(f"damaged GGUF header: metadata key {key!r} is an array of unknown type {etype}")
    n = cur.u64("array length")
    min_size = 8 if etype == STRING else SCALAR_DTYPES[etype].itemsize
    if n > cur.left() // min_size:
        raise cur.fail(f"truncated or damaged GGUF header: metadata key {key!r} claims {n} {VALUE_TYPE_NAMES[etype]} elements, "
                       f"the file has {cur.left()} bytes left")
    if etype == STRING:
        return [cur.string(f"element {i}") for i in range(n)], etype
    dt = SCALAR_DTYPES[etype]
    values = np.frombuffer(cur.buf, dt, n, cur.pos).tolist()
    cur.pos += n * dt.itemsize
    return values, etype


def parse_header(buf, size: int, path: Path) -> Header:
    """Parse and check a GGUF header held in ``buf`` (any buffer of ``size`` bytes: a memory map)."""
    cur = _Cursor(buf, size, path)
    magic = cur.raw(4, "magic") if size >= 4 else bytes(buf[:size])
    if magic != GGUF_MAGIC:
        raise cur.fail(f"not a GGUF file (magic {magic!r}, expected b'GGUF')")
    version = cur.u32("version")
    if version & 0xFFFF == 0 and version:
        raise cur.fail(f"big-endian GGUF (version field {version:#010x}) is not supported")
    if version not in SUPPORTED_VERSIONS:
        raise cur.fail(f"GGUF version {version} is not supported (only {' and '.join(map(str, SUPPORTED_VERSIONS))})")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("key/value count")
    if n_kv > cur.left() // _MIN_KV_BYTES:
        raise cur.fail(f"truncated or damaged GGUF header: key/value count {n_kv} is impossible in a file of {size} bytes")
    if n_tensors > cur.left() // _MIN_TENSOR_INFO_BYTES:
        raise cur.fail(f"truncated or damaged GGUF header: tensor count {n_tensors} is impossible in a file of {size} bytes")

    metadata: dict[str, Any] = {}
    types: dict[str, tuple[int, int | None]] = {}
    for i in range(n_kv):
        cur.where = f"metadata entry {i}"
        key = cur.string("key")
        cur.where = f"metadata key {key!r}"
        if key in types:
            raise cur.fail(f"damaged GGUF header: duplicate metadata key {key!r}")
        vtype = cur.u32("value type")
        if vtype == ARRAY:
            value, etype = _array(cur, key)
        elif vtype in VALUE_TYPE_NAMES:
            value, etype = _value(cur, vtype, "value"), None
        else:
            raise cur.fail(f"damaged GGUF header: metadata key {key!r} has unknown value type {vtype}")
        metadata[key], types[key] = value, (vtype, etype)

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in types:
        alignment = metadata["general.alignment"]
        if types["general.alignment"] != (UINT32, None) or alignment == 0 or alignment & (alignment - 1):
            raise cur.fail(f"damaged GGUF header: general.alignment {alignment!r} "
                           f"({VALUE_TYPE_NAMES[types['general.alignment'][0]]}) is not a uint32 power of two")

    sizes = ggml_type_sizes() if n_tensors else {}
    infos: list[tuple[str, int, tuple[int, ...], int]] = []
    names: set[str] = set()
    for i in range(n_tensors):
        cur.where = f"tensor info {i}"
        name = cur.string("name")
        if not name:
            raise cur.fail(f"damaged GGUF header: tensor {i} has an empty name")
        cur.where = f"tensor {name!r}"
        if len(name.encode("utf-8")) >= MAX_NAME:
            raise cur.fail(f"damaged GGUF header: tensor name {name[:80]!r} is {len(name.encode())} bytes "
                           f"(at most {MAX_NAME - 1})")
        if name in names:
            raise cur.fail(f"damaged GGUF header: duplicate tensor {name!r}")
        names.add(name)
        n_dims = cur.u32("dimension count")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.fail(f"damaged GGUF header: tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS})")
        dims = tuple(cur.u64(f"dimension {d}") for d in range(n_dims))
        ggml_type = cur.u32("type")
        offset = cur.u64("data offset")
        if ggml_type not in sizes:
            raise cur.fail(f"damaged GGUF header: tensor {name!r} has unknown GGML type {ggml_type}")
        infos.append((name, ggml_type, dims, offset))

    data_offset = -(-cur.pos // alignment) * alignment
    # where each tensor's bytes may run to: the next tensor's start, or the end of the file
    bounds = sorted({min(data_offset + offset, size) for *_, offset in infos} | {size})
    tensors: list[TensorInfo] = []
    for name, ggml_type, dims, offset in infos:
        block, type_size = sizes[ggml_type]
        if dims[0] % block:
            raise cur.fail(f"damaged GGUF header: tensor {name!r} row length {dims[0]} is not a multiple of "
                           f"its type's block size {block}")
        n_elements = 1
        for d in dims:
            n_elements *= d
        nbytes = n_elements // block * type_size
        if offset % alignment:
            raise cur.fail(f"damaged GGUF header: tensor {name!r} data offset {offset} is not a multiple of "
                           f"general.alignment {alignment}")
        start = data_offset + offset
        if start > size:
            raise cur.fail(f"damaged GGUF header: tensor {name!r} data offset {offset} lies outside the file "
                           f"(data section {data_offset}..{size})")
        if ggml_type == q2.GGML_TYPE:
            room = bounds[bisect.bisect_right(bounds, start)] - start if start < size else 0
            if problem := _q2_layout_problem(name, dims, n_elements, nbytes, room, alignment):
                raise cur.fail(problem)
        if start + nbytes > size:
            raise cur.fail(f"truncated file: tensor {name!r} ({list(dims)}, {nbytes} bytes) ends at byte "
                           f"{start + nbytes}, the file has {size}")
        tensors.append(TensorInfo(name, ggml_type, dims, start, nbytes))
    placed = sorted((t for t in tensors if t.nbytes), key=lambda t: t.offset)
    for a, b in zip(placed, placed[1:]):
        if a.offset + a.nbytes > b.offset:
            raise cur.fail(f"damaged GGUF header: tensor {b.name!r} (bytes {b.offset}..{b.offset + b.nbytes}) "
                           f"overlaps tensor {a.name!r} (bytes {a.offset}..{a.offset + a.nbytes})")
    return Header(version, alignment, metadata, types, tensors, data_offset)


def _q2_layout_problem(name: str, dims: tuple[int, ...], n_elements: int, nbytes: int, room: int,
                       alignment: int) -> str | None:
    """Why a type-42 tensor is in the other Q2_0 layout, or None. ``room``: its bytes from its
    offset to the next tensor's or the end of the file; ``nbytes``: its size in the 64-weight
    layout. It is when those do not hold the 64-weight blocks but hold the 128-weight ones up to
    the alignment padding that follows a tensor."""
    if nbytes <= room or dims[0] % Q2_0_G128_QK:
        return None
    other = n_elements // Q2_0_G128_QK * Q2_0_G128_BYTES
    if not other <= room < other + alignment:
        return None
    return (f"tensor {name!r} ({list(dims)}, Q2_0, type {q2.GGML_TYPE}) is in the Q2_0 layout of PrismML's "
            f"llama.cpp fork, {Q2_0_G128_QK}-weight blocks of {Q2_0_G128_BYTES} bytes ({other} bytes; the file "
            f"gives it {room}), not in ggml's {q2.QK}-weight blocks of {q2.BLOCK_BYTES} bytes ({nbytes} bytes); "
            f"the pinned llama.cpp (llama-cpp-python 0.3.36) reads only the {q2.QK}-weight layout, as does this "
            f"reader")


# ---------------------------------------------------------------------------- files

# GGML type ids we read (gguf.GGMLQuantizationType values).
TYPE_F32, TYPE_F16, TYPE_BF16 = 0, 1, 30
SUPPORTED_TYPES = {TYPE_F32: "F32", TYPE_F16: "F16", TYPE_BF16: "BF16",
                   **{t: fmt.NAME for t, fmt in BLOCK_FORMATS.items()}}
FLOAT_TENSOR_TYPES = (TYPE_F32, TYPE_F16, TYPE_BF16)


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


def _nonfinite_fp16(bits: np.ndarray) -> np.ndarray:
    """Mask of uint16 fp16 bit patterns that are inf or NaN (exponent bits all ones)."""
    return (bits & 0x7C00) == 0x7C00


class GGUFFile:
    """A parsed GGUF file. ``metadata`` maps key → Python value; ``tensors`` name → record.

    The header is parsed by :func:`parse_header` (bounded, every field checked), the
    tensor data read through one read-only memory map."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            raise GGUFFormatError(f"{self.path}: is a directory, not a GGUF file")
        if not self.path.is_file():
            raise GGUFFormatError(f"{self.path}: no such file")
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                magic = f.read(4)
            if magic != GGUF_MAGIC:
                raise GGUFFormatError(f"{self.path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
            self._data = np.memmap(self.path, mode="r")
        except OSError as e:  # unreadable (permissions, I/O errors, special files)
            raise GGUFFormatError(f"{self.path}: cannot read ({e.strerror or e})") from None
        header = parse_header(memoryview(self._data), size, self.path)
        self.version, self.alignment = header.version, header.alignment
        self.metadata = MappingProxyType({k: v for k, v in header.metadata.items() if not k.startswith("GGUF.")})
        self.metadata_types = MappingProxyType({k: t for k, t in header.types.items() if k in self.metadata})
        self.tensors = MappingProxyType({
            t.name: TensorRecord(t.name, t.ggml_type, tuple(reversed(t.dims)), t.offset, t.nbytes)  # → (out, in)
            for t in header.tensors})
        self._sha256: str | None = None

    # ------------------------------------------------------------------ access
    @property
    def architecture(self) -> str:
        return self.str_key("general.architecture")

    def require_key(self, key: str) -> Any:
        if key not in self.metadata:
            raise GGUFFormatError(f"{self.path}: missing required metadata key {key!r}")
        return self.metadata[key]

    def _typed(self, key: str, default, allowed: frozenset, kind: str):
        if key not in self.metadata:
            if default is None:
                self.require_key(key)
            return default
        vtype, _ = self.metadata_types[key]
        if vtype not in allowed:
            raise GGUFFormatError(f"{self.path}: metadata key {key!r} is a {VALUE_TYPE_NAMES[vtype]}, expected {kind}")
        return self.metadata[key]

    def int_key(self, key: str, default: int | None = None, lo: int | None = None, hi: int | None = None) -> int:
        """An integer key (any GGUF integer type), required when ``default`` is None, in [lo, hi]."""
        v = self._typed(key, default, INTEGER_TYPES, "an integer")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = f"at least {lo}" if hi is None else f"in {lo}..{hi}" if lo is not None else f"at most {hi}"
            raise GGUFFormatError(f"{self.path}: metadata key {key!r} is {v}, must be {bounds}")
        return int(v)

    def float_key(self, key: str, default: float | None = None, lo: float = 0.0, hi: float = math.inf) -> float:
        """A finite float key (float32/float64, or an integer) with lo < value < hi."""
        v = float(self._typed(key, default, FLOAT_TYPES | INTEGER_TYPES, "a number"))
        if not (math.isfinite(v) and lo < v < hi):
            bounds = f"above {lo}" if hi == math.inf else f"between {lo} and {hi}"
            raise GGUFFormatError(f"{self.path}: metadata key {key!r} is {v}, must be finite and {bounds}")
        return v

    def str_key(self, key: str, default: str | None = None) -> str:
        return self._typed(key, default, frozenset({STRING}), "a string")

    def require_tensor(self, name: str) -> TensorRecord:
        if name not in self.tensors:
            raise GGUFFormatError(f"{self.path}: missing required tensor {name!r}")
        rec = self.tensors[name]
        if rec.ggml_type not in SUPPORTED_TYPES:
            raise GGUFFormatError(f"{self.path}: tensor {name!r} has unsupported type {rec.ggml_type} "
                                  f"(supported: {', '.join(SUPPORTED_TYPES.values())})")
        fmt = block_format(rec.ggml_type)
        if fmt is not None and rec.shape[-1] % fmt.QK:
            raise GGUFFormatError(f"{self.path}: tensor {name!r} row length {rec.shape[-1]} is not a "
                                  f"multiple of {fmt.QK}")
        return rec

    def raw(self, name: str) -> np.ndarray:
        """Zero-copy uint8 view of a tensor's bytes, shaped (rows, bytes per row)."""
        rec = self.require_tensor(name)
        rows = int(np.prod(rec.shape[:-1])) if len(rec.shape) > 1 else 1
        flat = self._data[rec.offset : rec.offset + rec.nbytes]
        return flat.reshape(rows, rec.nbytes // rows if rows else 0)

    def check_finite(self, name: str) -> None:
        """Refuse a tensor holding inf or NaN: a block scale (Q1_0, Q2_0), or any value of a float
        tensor (fp16/bf16/fp32 checked on their bit patterns: exponent bits all ones)."""
        rec = self.require_tensor(name)
        raw = self.raw(name)
        fmt = block_format(rec.ggml_type)
        if fmt is not None:
            scales = raw.reshape(-1, fmt.BLOCK_BYTES)[:, fmt.SCALE_BYTES].copy().view("<u2")
            bad = np.flatnonzero(_nonfinite_fp16(scales))
            what = "block scale"
        elif rec.ggml_type == TYPE_F16:
            bad = np.flatnonzero(_nonfinite_fp16(raw.view("<u2")))
            what = "value"
        else:  # F32 / BF16: 8 exponent bits
            bits = raw.view("<u4") >> 16 if rec.ggml_type == TYPE_F32 else raw.view("<u2")
            bad = np.flatnonzero((bits & 0x7F80) == 0x7F80)
            what = "value"
        if bad.size:
            raise GGUFFormatError(f"{self.path}: tensor {name!r} has {bad.size} non-finite (inf/NaN) {what}"
                                  f"{'s' if bad.size > 1 else ''}, the first at index {int(bad[0])}")

    def dequantize(self, name: str) -> np.ndarray:
        """float32 array in PyTorch shape."""
        rec = self.require_tensor(name)
        raw = self.raw(name)
        fmt = block_format(rec.ggml_type)
        if fmt is not None:
            w = fmt.dequantize(raw)
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
    tensors: (name, array, ggml_type); Q1_0 and Q2_0 arrays are uint8 (out, nbytes) blocks,
    F32/F16 arrays are float matrices in PyTorch shape, BF16 arrays uint16 bit patterns in
    PyTorch shape (written as they are).
    """
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    writer = gguf.GGUFWriter(tmp, arch)
    add_metadata(writer)
    for name, array, ggml_type in tensors:
        fmt = block_format(ggml_type)
        if fmt is not None:
            blocks = np.ascontiguousarray(array, dtype=np.uint8)
            if blocks.ndim != 2 or blocks.shape[1] % fmt.BLOCK_BYTES:
                raise ValueError(f"{name}: {fmt.NAME} blocks must be uint8 (out, n * {fmt.BLOCK_BYTES}), "
                                 f"got shape {blocks.shape}")
            # the element shape given outright, the bytes as int8: gguf-py would look the type up
            # in its size table to convert a uint8 shape, and it has no Q2_0
            shape = (blocks.shape[0], blocks.shape[1] // fmt.BLOCK_BYTES * fmt.QK)
            writer.add_tensor(name, blocks.view(np.int8), raw_shape=shape, raw_dtype=fmt.GGML_TYPE)
        elif ggml_type == TYPE_F32:
            writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
        elif ggml_type == TYPE_F16:
            writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float16))
        elif ggml_type == TYPE_BF16:
            bits = np.ascontiguousarray(array, dtype="<u2")
            writer.add_tensor(name, bits.view(np.uint8), raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            raise ValueError(f"cannot write tensor {name} of GGML type {ggml_type}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)  # never leave a half-written model under the final name
    return path
