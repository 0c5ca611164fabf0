"""Patches: the ordered moves a search accepted, their JSON files, and applying them to a GGUF.

Applying a patch is a bytewise XOR on a copy of the base file; the engine never loads the model.
Every move is self-inverse, so applying a patch to its own output restores the base exactly. A
move acts on one block of a Q1_0 tensor (``group``: invert its sign bits; ``scale``: flip a bit
of its FP16 scale) or of a Q2_0 tensor (``negate``, ``zero_plus``, ``zero_minus``: transpose two
of its code values, see :mod:`neagari.engine.q2`; ``scale``); its record names the tensor type
(``"tensor_type": "Q2_0"``; absent means Q1_0, as in upstream's files), and a move is refused
on a tensor of another type.

Two JSON layouts are read and written:

* upstream (the paper's files): ``{"version": 2, "format": "bankai_group_xor_v2" |
  "neagari_xor_v2", "flips": [...], "fitness_history": [...], ...search fields}``. Old files
  lack ``type`` (meaning "group") and the gap fields.
* ours: the same flip records plus ``"format": "neagari-patch", "format_version": 1,
  "base_sha256", "search_config", "created_by"`` and optional ``patched_sha256``, ``metadata``.

Flip records are kept verbatim (gap lists stay lists of ``[name, gap]`` pairs, names may
repeat); :class:`Move` is the parsed, validated view the code works with.

Writing a patched GGUF never touches the base and never leaves a partial output: the bytes go to
a temporary file next to the output, named ``.OUT.neagari-tmp-PID-XXXXXXXX``, which is fsynced
and renamed onto the output (the directory is fsynced too). A temporary file whose process is no
longer running (a killed run) is removed by the next run writing the same output, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from neagari.files import fsync_dir, same_file
from neagari.engine import q1, q2
from neagari.engine.gguf_io import GGUFFile
from neagari.engine.quants import BY_NAME, block_format
from neagari.hashing import sha256_file

FORMAT = "neagari-patch"
FORMAT_VERSION = 1
UPSTREAM_FORMATS = ("bankai_group_xor_v2", "neagari_xor_v2")
UPSTREAM_WRITE_FORMAT = "neagari_xor_v2"
MOVE_TYPES = ("group", "scale") + q2.GROUP_MOVES
# Top-level keys with a meaning of their own; every other upstream key is kept in ``metadata``.
_RESERVED = {"version", "format", "format_version", "flips", "fitness_history", "base_sha256",
             "patched_sha256", "search_config", "created_by", "metadata", "n_flips"}
_SHA_RE = re.compile(r"[0-9a-fA-F]{64}")  # matched with fullmatch: "$" would let a trailing newline in
TEMP_MARK = ".neagari-tmp-"  # the temporary output is .OUT.neagari-tmp-PID-XXXXXXXX next to OUT
log = logging.getLogger(__name__)


class PatchError(ValueError):
    """A patch cannot be read, written or applied; the message says why, in one line."""


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _show(x: Any, limit: int = 80) -> str:
    """A value for an error message: its repr, shortened (a patch may hold anything)."""
    try:
        r = repr(x)
    except RecursionError:
        r = f"<deeply nested {type(x).__name__}>"
    return r if len(r) <= limit else r[: limit - 3] + "..."


@dataclass(frozen=True)
class Move:
    """One self-inverse move of one block: on Q1_0 all 128 sign bits (``group``), on Q2_0 a
    transposition of two code values of all 64 weights (q2.GROUP_MOVES), on either one bit of
    the FP16 scale (``scale``)."""

    layer: int
    proj: str  # e.g. "ffn_down.weight"
    group: int
    type: str = "group"
    bit: int | None = None  # a scale move's bit; None for a group move, as q1.xor_block takes it
    tensor_type: str | None = None  # "Q1_0" or "Q2_0"; None: Q2_0 for its own moves, else Q1_0

    def __post_init__(self):
        if not _is_int(self.layer) or self.layer < 0:
            raise PatchError(f"layer must be an integer >= 0, got {_show(self.layer)}")
        if not isinstance(self.proj, str) or not self.proj:
            raise PatchError(f"proj must be a non-empty string, got {_show(self.proj)}")
        if not _is_int(self.group) or self.group < 0:
            raise PatchError(f"group must be an integer >= 0, got {_show(self.group)}")
        if not isinstance(self.type, str) or self.type not in MOVE_TYPES:
            raise PatchError(f"type must be one of {', '.join(MOVE_TYPES)}, got {_show(self.type)}")
        tensor_type = self.tensor_type
        if tensor_type is None:
            tensor_type = q2.NAME if self.type in q2.GROUP_MOVES else q1.NAME
        if not isinstance(tensor_type, str) or tensor_type not in BY_NAME:
            raise PatchError(f"tensor_type must be one of {', '.join(BY_NAME)}, got {_show(tensor_type)}")
        if self.type not in BY_NAME[tensor_type].MOVES:
            raise PatchError(f"a {self.type} move does not act on {tensor_type} groups "
                             f"(their moves: {', '.join(BY_NAME[tensor_type].MOVES)})")
        object.__setattr__(self, "tensor_type", tensor_type)
        if self.type == "scale" and (not _is_int(self.bit) or not 0 <= self.bit < 16):
            raise PatchError(f"scale flip needs an integer bit in 0..15, got {_show(self.bit)}")
        # numpy integers from a search loop must not leak into JSON; a group flip has no bit
        bit = int(self.bit) if self.type == "scale" else None
        for name, value in (("layer", int(self.layer)), ("group", int(self.group)), ("bit", bit)):
            object.__setattr__(self, name, value)

    @property
    def tensor(self) -> str:
        return f"blk.{self.layer}.{self.proj}"

    def describe(self) -> str:
        bit = f" bit {self.bit}" if self.type == "scale" else ""
        tensor = self.tensor if self.tensor.isprintable() else _show(self.tensor)
        on = f" on {self.tensor_type}" if self.tensor_type != q1.NAME else ""
        return f"{self.type} flip of {tensor} group {self.group}{bit}{on}"

    def to_record(self) -> dict:
        rec = {"layer": self.layer, "proj": self.proj, "group": self.group, "type": self.type}
        if self.type == "scale":
            rec["bit"] = self.bit
        if self.tensor_type != q1.NAME:  # Q1_0 records keep the layout upstream's files have
            rec["tensor_type"] = self.tensor_type
        return rec

    @classmethod
    def from_record(cls, rec: Any) -> "Move":
        if not isinstance(rec, dict):
            raise PatchError(f"flip must be a JSON object, got {type(rec).__name__}")
        typ = rec.get("type", "group")  # files written before scale moves existed lack "type"
        return cls(rec.get("layer"), rec.get("proj"), rec.get("group"), typ,
                   rec.get("bit") if typ == "scale" else None, rec.get("tensor_type"))


@dataclass
class Patch:
    """A parsed patch. ``records`` are the full flip dicts, one per move, in the same order.

    Built from moves alone (``Patch(moves=[...], base_sha256=...)``), records are derived.
    """

    moves: list[Move]
    records: list[dict] = field(default_factory=list)
    base_sha256: str | None = None
    search_config: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    fitness_history: list = field(default_factory=list)
    source_format: str = FORMAT
    patched_sha256: str | None = None  # sha256 of base after this patch, when known
    created_by: dict = field(default_factory=dict)

    def __post_init__(self):
        self.moves = list(self.moves)
        if not self.records and self.moves:
            self.records = [m.to_record() for m in self.moves]
        if len(self.records) != len(self.moves):
            raise PatchError(f"patch has {len(self.moves)} moves but {len(self.records)} flip records")


# ---------------------------------------------------------------------------- reading


def _check_sha(value: Any, key: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA_RE.fullmatch(value):
        raise PatchError(f"{where}: {key} must be 64 hex digits, got {_show(value)}")
    return value.lower()


def parse_patch(obj: Any, where: str = "patch") -> Patch:
    """Validate a decoded JSON document; ``where`` names it in error messages."""
    if not isinstance(obj, dict):
        raise PatchError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    fmt = obj.get("format")
    if fmt == FORMAT:
        version = obj.get("format_version")
        if not _is_int(version) or version != FORMAT_VERSION:
            raise PatchError(f"{where}: unsupported {FORMAT} format_version "
                             f"{_show(version)} (this reader knows {FORMAT_VERSION})")
        metadata = obj.get("metadata")
        metadata = {} if metadata is None else metadata
    elif isinstance(fmt, str) and fmt in UPSTREAM_FORMATS:
        version = obj.get("version", 2)
        if not _is_int(version) or version != 2:
            raise PatchError(f"{where}: unsupported upstream version {_show(version)} (expected 2)")
        metadata = {k: v for k, v in obj.items() if k not in _RESERVED}
    else:
        known = ", ".join((FORMAT,) + UPSTREAM_FORMATS)
        raise PatchError(f"{where}: unknown patch format {_show(fmt)} (known: {known})")
    flips = obj.get("flips")
    if not isinstance(flips, list):
        raise PatchError(f"{where}: missing 'flips' list")
    moves = []
    for i, rec in enumerate(flips):
        try:
            moves.append(Move.from_record(rec))
        except PatchError as e:
            raise PatchError(f"{where}: flip {i}: {e}") from None
    history = obj.get("fitness_history", [])
    if not isinstance(history, list):
        raise PatchError(f"{where}: fitness_history must be a list")
    for key, value in (("search_config", obj.get("search_config", {})), ("metadata", metadata),
                       ("created_by", obj.get("created_by", {}))):
        if not isinstance(value, dict):
            raise PatchError(f"{where}: {key} must be a JSON object")
    base = _check_sha(obj.get("base_sha256"), "base_sha256", where)
    if fmt == FORMAT and base is None:
        raise PatchError(f"{where}: {FORMAT} file lacks base_sha256")
    return Patch(moves=moves, records=list(flips), base_sha256=base,
                 search_config=obj.get("search_config", {}), metadata=metadata,
                 fitness_history=history, source_format=fmt,
                 patched_sha256=_check_sha(obj.get("patched_sha256"), "patched_sha256", where),
                 created_by=obj.get("created_by", {}))


def read_patch(path: str | os.PathLike) -> Patch:
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes())
    except OSError as e:
        raise PatchError(f"{path}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise PatchError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise PatchError(f"{path}: not UTF-8 JSON") from None
    except RecursionError:
        raise PatchError(f"{path}: JSON nested too deeply to read") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise PatchError(f"{path}: unreadable JSON ({e})") from None
    return parse_patch(obj, str(path))


# ---------------------------------------------------------------------------- writing


def _created_by() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"tool": "neagari", "version": version("neagari")}
    except PackageNotFoundError:  # a source tree without installed metadata
        return {"tool": "neagari", "version": None}


def patch_to_json(patch: Patch, fmt: str = "neagari") -> dict:
    """The JSON document for ``patch``; checks the records still describe the moves."""
    if len(patch.records) != len(patch.moves):
        raise PatchError(f"patch has {len(patch.moves)} moves but {len(patch.records)} flip records")
    for i, (move, rec) in enumerate(zip(patch.moves, patch.records)):
        try:
            same = Move.from_record(rec) == move
        except PatchError:
            same = False
        if not same:
            raise PatchError(f"flip {i}: record {json.dumps(rec)[:120]} does not describe {move.describe()}")
    base = _check_sha(patch.base_sha256, "base_sha256", "patch")
    patched = _check_sha(patch.patched_sha256, "patched_sha256", "patch")
    if fmt == "neagari":
        if base is None:
            raise PatchError(f"a {FORMAT} file must record base_sha256 (the GGUF the moves were searched on)")
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "search_config": patch.search_config,
               "created_by": patch.created_by or _created_by()}
        if patch.metadata:
            doc["metadata"] = patch.metadata
    elif fmt == "upstream":
        clash = sorted(set(patch.metadata) & _RESERVED)
        if clash:
            raise PatchError(f"metadata keys {clash} clash with upstream top-level fields")
        doc = {"version": 2, "format": UPSTREAM_WRITE_FORMAT, **patch.metadata}
        if patch.search_config:
            doc["search_config"] = patch.search_config
    else:
        raise PatchError(f"unknown output format {fmt!r} (use 'neagari' or 'upstream')")
    # upstream readers ignore unknown keys, so its files keep the hashes too: apply-patch checks them
    doc.update({k: v for k, v in (("base_sha256", base), ("patched_sha256", patched)) if v})
    doc.update(n_flips=len(patch.records), flips=patch.records, fitness_history=patch.fitness_history)
    return doc


def write_patch(path: str | os.PathLike, patch: Patch, fmt: str = "neagari") -> Path:
    """Write ``patch`` as ``fmt`` ("neagari" or "upstream") atomically; returns the path."""
    path = Path(path)
    doc = patch_to_json(patch, fmt)
    try:
        text = json.dumps(doc, indent=1)
    except (TypeError, ValueError) as e:
        raise PatchError(f"{path}: patch holds a value JSON cannot store ({e})") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)  # readers never see a half-written patch
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------- applying


def validate_moves(gguf_file: GGUFFile, moves: Iterable[Move]) -> None:
    """Check every move addresses an existing block of a tensor of its type (Q1_0 or Q2_0) and,
    for a scale move, a mantissa bit of its scale."""
    for i, m in enumerate(moves):
        rec = gguf_file.tensors.get(m.tensor)
        if rec is None:
            raise PatchError(f"flip {i} ({m.describe()}): no tensor {m.tensor!r} in {gguf_file.path.name}")
        fmt = block_format(rec.ggml_type)
        if fmt is None or fmt.NAME != m.tensor_type:
            raise PatchError(f"flip {i} ({m.describe()}): tensor {m.tensor} is {rec.type_name}, "
                             f"not {m.tensor_type}")
        n = rec.nbytes // fmt.BLOCK_BYTES
        if m.group >= n:
            raise PatchError(f"flip {i} ({m.describe()}): group out of range, {m.tensor} has {n} groups")
        # exponent/sign bits would turn a scale into inf, NaN or its negative: not a move
        if m.type == "scale" and m.bit not in fmt.SCALE_BITS:
            raise PatchError(f"flip {i} ({m.describe()}): scale bit {m.bit} is not a mantissa bit "
                             f"({fmt.SCALE_BITS[0]}..{fmt.SCALE_BITS[-1]})")


def apply_moves_inplace(mm: np.ndarray, gguf_file: GGUFFile, moves: Sequence[Move]) -> None:
    """XOR ``moves`` into ``mm``, a uint8 array of a whole file laid out like ``gguf_file``."""
    moves = list(moves)
    validate_moves(gguf_file, moves)
    for m in moves:
        rec = gguf_file.tensors[m.tensor]
        if rec.offset + rec.nbytes > mm.shape[0]:
            raise PatchError(f"{m.tensor} ends at byte {rec.offset + rec.nbytes}, the target has {mm.shape[0]}")
        fmt = BY_NAME[m.tensor_type]
        flat = mm[rec.offset : rec.offset + rec.nbytes]  # a view: edits land in mm
        fmt.apply_move(flat[fmt.block_bytes(m.group)], m.type, m.bit)


def _sha256_after(path: Path, gguf_file: GGUFFile, moves: Sequence[Move], chunk: int = 1 << 24) -> str:
    """sha256 the file would have with ``moves`` applied, computed without writing anything.

    Each moved block is read once and the moves applied to it in order (a Q2_0 move's XOR mask
    depends on the block's bytes, so masks cannot be summed up front); the file is then hashed
    with those blocks in place."""
    import hashlib

    moved: dict[int, np.ndarray] = {}  # absolute offset of a moved block → its bytes after the moves
    for m in moves:
        fmt = BY_NAME[m.tensor_type]
        rec = gguf_file.tensors[m.tensor]
        where = fmt.block_bytes(m.group)
        start = rec.offset + where.start
        if start not in moved:
            moved[start] = np.array(gguf_file.raw(m.tensor).reshape(-1)[where])
        fmt.apply_move(moved[start], m.type, m.bit)
    starts = sorted(moved)
    pos = np.concatenate([np.zeros(0, np.int64)] + [np.arange(s, s + moved[s].size) for s in starts])
    val = np.concatenate([np.zeros(0, np.uint8)] + [moved[s] for s in starts])
    h, start = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            buf = np.frombuffer(block, dtype=np.uint8).copy()
            lo, hi = np.searchsorted(pos, [start, start + len(buf)])
            buf[pos[lo:hi] - start] = val[lo:hi]  # blocks never overlap: each byte is set once
            h.update(buf.tobytes())
            start += len(buf)
    return h.hexdigest()


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process, or not a pid
        return pid > 0
    return True


def stale_temp_files(out: str | os.PathLike) -> list[Path]:
    """Temporary files of earlier runs writing ``out`` whose process no longer runs (killed)."""
    out = Path(out)
    prefix = f".{out.name}{TEMP_MARK}"
    try:
        names = os.listdir(out.parent)
    except OSError:
        return []
    stale = []
    for name in names:
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_running(int(pid)):
            stale.append(out.parent / name)
    return sorted(stale)


def _check_output(base: Path, out: Path, patch_paths: Sequence[Path]) -> None:
    """Refuse an output that would destroy an input, or that cannot be a file."""
    if same_file(out, base):
        raise PatchError(f"--out {out} is the base file {base}; write the patched model to another path")
    for p in patch_paths:
        if same_file(out, Path(p)):
            raise PatchError(f"--out {out} is the patch file {p}; write the patched model to another path")
    if out.is_dir():
        raise PatchError(f"--out {out} is a directory; give the path of the file to write")
    for parent in out.parents:  # the deepest existing ancestor must be a directory
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise PatchError(f"--out {out}: {parent} is not a directory")
            break


def _write_atomically(base: Path, out: Path, gf: GGUFFile, move_lists: Sequence[Sequence[Move]],
                      expect: str | None) -> str:
    """Copy ``base`` to a temporary file next to ``out``, apply the moves of each list in order,
    check, fsync, rename."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PatchError(f"--out {out}: a component of {out.parent} is not a directory") from None
    for stale in stale_temp_files(out):
        stale.unlink(missing_ok=True)
        log.warning("removed %s, left by an earlier apply-patch that was killed", stale)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}{TEMP_MARK}{os.getpid()}-", dir=out.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "r+b") as f:
            with open(base, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 24)
            f.flush()
            mm = np.memmap(tmp, dtype=np.uint8, mode="r+")
            for moves in move_lists:
                apply_moves_inplace(mm, gf, moves)
            mm.flush()
            del mm  # release the mapping before the rename (Windows refuses otherwise)
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        if expect is not None and digest != expect:
            raise PatchError(f"patched file has sha256 {digest}, but the last patch records {expect}")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the mode a plain new file gets
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)
    return digest


def apply_patch_files(base: str | os.PathLike, out: str | os.PathLike,
                      patch_paths: Sequence[str | os.PathLike], force: bool = False) -> str:
    """Apply patches in order to a copy of ``base``, write it to ``out``; return out's sha256.

    Everything is checked before any byte is written: ``out`` is neither the base nor a patch
    file (nor a link to one) and can be a file, each patch parses, each move addresses a block
    of a ``base`` tensor of its type (Q1_0 or Q2_0), and each patch matches the file it is
    applied to. Patch k sees the file S_k (the base after patches 0..k-1) and is accepted when

    * its ``base_sha256`` equals sha256(S_k) (applying it), or
    * its ``patched_sha256`` equals sha256(S_k) (undoing it: each move is self-inverse, so its
      moves in reverse order undo it; Q2_0 moves on one group need not commute), or
    * it records no ``base_sha256`` (upstream files) and ``force`` is true.

    sha256(S_k) for k > 0 comes from the previous patch's recorded hashes when it has them,
    else from hashing ``base`` with the earlier moves applied in memory. The output is written
    atomically (see the module docstring): ``out`` is either untouched or complete.
    """
    base, out = Path(base), Path(out)
    if not patch_paths:
        raise PatchError("no patch files given")
    _check_output(base, out, [Path(p) for p in patch_paths])
    patches = [read_patch(p) for p in patch_paths]
    gf = GGUFFile(base)
    for p, patch in zip(patch_paths, patches):
        try:
            validate_moves(gf, patch.moves)
        except PatchError as e:
            raise PatchError(f"{p}: {e}") from None

    current = gf.sha256()
    applied: list[Move] = []
    move_lists: list[list[Move]] = []
    for p, patch in zip(patch_paths, patches):
        moves = list(patch.moves)
        if current is None:  # unknown after a forced patch: hash the prospective file
            current = _sha256_after(base, gf, applied)
        if patch.base_sha256 is None:
            if not force:
                raise PatchError(f"{p}: records no base_sha256, so it cannot be checked against "
                                 f"{base.name}; pass force to apply it anyway")
            nxt = None
        elif patch.base_sha256 == current:
            nxt = patch.patched_sha256
        elif patch.patched_sha256 == current:
            nxt = patch.base_sha256
            moves.reverse()
        else:
            raise PatchError(f"{p}: made for base sha256 {patch.base_sha256}, but the file it would "
                             f"apply to has sha256 {current}")
        applied.extend(moves)
        move_lists.append(moves)
        current = nxt
    return _write_atomically(base, out, gf, move_lists, current)


# Public name: the sha256 a file would have after the moves, computed without writing it.
sha256_after_moves = _sha256_after
