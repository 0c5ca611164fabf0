"""Provenance records: what made each output, checked later by ``verify``.

Snakemake hashes neither files over 1 MB nor script contents, so every rule's script writes,
through :class:`RuleProvenance`, a sidecar ``<output>.prov.json`` per output: the hashes of its
inputs, of itself and of the script, the rule's params/wildcards/config, the git commit and the
package versions. A directory output gets ``<dir>.prov.json`` with a hash per contained file.
The record lies next to its output, so a tree can be moved and still verified.

``verify`` validates every record against :class:`Record` before using it: a record that is not
JSON, lacks a field or holds a field of the wrong type is reported as ``bad-record`` and the other
records are still checked. The output's kind (file, directory or symlink; read from the record's
``kind`` or, in records written before it existed, inferred from whether it lists ``files``) must
match what is on disk, else ``kind-changed``.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import platform
import re
import stat
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neagari.hashing import sha256_file

RECORD_SUFFIX = ".prov.json"
RECORD_VERSION = 1
PACKAGES = ("torch", "numpy", "gguf", "tokenizers", "snakemake", "polars", "pandera", "neagari")
# Snakemake touches this inside directory outputs after the job, so it cannot be hashed.
SNAKEMAKE_TIMESTAMP = ".snakemake_timestamp"
IGNORED_SUFFIXES = (".part", ".tmp")
WARNING_KINDS = frozenset({"input-missing"})


class ProvenanceError(ValueError):
    """A record cannot be written; the message says why, in one line."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- hashing


def _dir_files(path: Path) -> dict[str, str]:
    """Relative posix path → sha256 of every file under a directory output."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in filenames:
            if name == SNAKEMAKE_TIMESTAMP or name.endswith(IGNORED_SUFFIXES):
                continue
            full = Path(dirpath) / name
            if full.is_file():
                files[full.relative_to(path).as_posix()] = sha256_file(full)
    return dict(sorted(files.items()))


def _dir_digest(files: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for rel, sha in sorted(files.items()):
        h.update(f"{rel}\0{sha}\n".encode())  # NUL cannot occur in a path: no ambiguity
    return h.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """File: sha256 of its bytes. Directory: sha256 over its sorted (relative path, sha) pairs."""
    path = Path(path)
    return _dir_digest(_dir_files(path)) if path.is_dir() else sha256_file(path)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _kind(path: Path, follow: bool = False) -> str | None:
    """``file``, ``directory``, ``symlink`` (unless ``follow``) or ``other`` (fifo, socket,
    device); None when nothing is there (``follow``: also a dangling link)."""
    try:
        mode = (path.stat() if follow else path.lstat()).st_mode
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):  # ELOOP: a circle of links leads nowhere
            return None
        raise
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file" if stat.S_ISREG(mode) else "directory" if stat.S_ISDIR(mode) else "other"


# ---------------------------------------------------------------------------- environment


def git_state(repo_dir: str | os.PathLike) -> dict:
    """Commit and dirtiness of the work tree holding ``repo_dir``; None where git cannot tell."""
    def git(*args):
        try:
            r = subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    if git("rev-parse", "--is-inside-work-tree") != "true":
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"),  # None in a repository without commits
            "dirty": None if status is None else bool(status)}


def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def version_or_none(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    versions = {name: version_or_none(name) for name in PACKAGES}
    device: dict[str, Any] = {"cuda_available": None, "name": None}
    try:
        if "torch" not in sys.modules:  # a rule that never touched torch ran on no device
            raise ImportError
        import torch

        device["cuda_available"] = torch.cuda.is_available()
        device["cuda_version"] = torch.version.cuda
        if device["cuda_available"]:
            device["name"] = torch.cuda.get_device_name(0)
    except Exception:  # no torch, or a broken driver: the record still gets written
        pass
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "device": device}


# ---------------------------------------------------------------------------- records


def _named_items(obj) -> list[tuple[str | None, Any]]:
    """(name or None, item) per item of a Snakemake Namedlist (names may cover index ranges)."""
    names: dict[int, str] = {}
    for name, (start, end) in getattr(obj, "_names", {}).items():
        for i in range(start, start + 1 if end is None else end):
            names[i] = name
    return [(names.get(i), item) for i, item in enumerate(obj)]


def plain(obj: Any) -> Any:
    """JSON-ready copy: Namedlists, mappings, Paths, numpy scalars/arrays → plain types."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():
        return obj.item()  # numpy or torch scalar
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):
        return obj.tolist()
    if isinstance(obj, list) and getattr(obj, "_names", None):  # Snakemake Namedlist with names
        out = {name: plain(getattr(obj, name)) for name in obj.keys()}
        positional = [plain(item) for name, item in _named_items(obj) if name is None]
        return {**out, "_positional": positional} if positional else out
    if isinstance(obj, (list, tuple)):
        return [plain(x) for x in obj]
    if isinstance(obj, Mapping) or callable(getattr(obj, "items", None)):
        return {str(k): plain(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(dataclasses.asdict(obj))
    if isinstance(obj, (set, frozenset)):
        return sorted((plain(x) for x in obj), key=repr)
    if isinstance(obj, bytes):
        return obj.hex()
    return repr(obj)  # keep something readable rather than failing the rule


def _rel(path: str | os.PathLike) -> str:
    """Path relative to the working directory when it lies below it, else absolute."""
    p = Path(os.path.abspath(path))
    try:
        return p.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return p.as_posix()


def _input_entries(inputs) -> list[dict]:
    if isinstance(inputs, Mapping):
        named = [(k or None, p) for k, v in inputs.items()
                 for p in ([v] if isinstance(v, (str, os.PathLike)) else v)]
    elif isinstance(inputs, list) and hasattr(inputs, "_names"):
        named = _named_items(inputs)
    else:
        named = [(None, p) for p in inputs]
    entries, cache = [], {}
    for name, p in named:
        path = Path(p)
        key = os.path.abspath(path)
        if key not in cache:  # a rule may name one file twice; hash it once
            exists = path.exists()
            st = path.stat() if exists else None
            cache[key] = {"sha256": sha256_path(path) if exists else None,
                          "size": _size(path) if exists else None,
                          "mtime_ns": st.st_mtime_ns if exists and path.is_file() else None}
        entries.append({**({"name": name} if name else {}), "path": _rel(path), **cache[key]})
    return entries


def write_records(outputs: Iterable[str | os.PathLike], *, rule: str, inputs, params: Any, wildcards: Any,
                  config: Any, script: str | os.PathLike | None, seed: int | None = None,
                  device: str | None = None, started_at: str, finished_at: str | None = None,
                  extra: dict | None = None) -> list[Path]:
    """Write ``<output>.prov.json`` for every output (all must exist); return the record paths."""
    outputs = [Path(o) for o in outputs]
    missing = [str(o) for o in outputs if not o.exists()]
    if missing:
        raise ProvenanceError(f"rule {rule}: outputs missing, no provenance written: {', '.join(missing)}")
    odd = [str(o) for o in outputs if _kind(o, follow=True) == "other"]
    if odd:
        raise ProvenanceError(f"rule {rule}: outputs neither files nor directories, no provenance written: "
                              f"{', '.join(odd)}")
    script_path = Path(script) if script else None
    shared = {
        "record_version": RECORD_VERSION, "rule": rule, "wildcards": plain(wildcards) or {},
        "params": plain(params) or {}, "config": plain(config), "inputs": _input_entries(inputs),
        "script": None if script_path is None else {
            "path": _rel(script_path),
            "sha256": sha256_path(script_path) if script_path.is_file() else None},
        "git": git_state(script_path.parent if script_path else Path.cwd()),
        "environment": environment(), "seed": plain(seed), "device": plain(device),
        "started_at": started_at, "finished_at": finished_at or now_iso(),
    }
    if extra:
        shared["extra"] = plain(extra)
    written = []
    for out in outputs:
        st = out.stat()
        entry: dict[str, Any] = {"path": _rel(out), "kind": _kind(out), "size": _size(out),
                                 "mtime": st.st_mtime, "mtime_ns": st.st_mtime_ns}
        if out.is_dir():
            entry["files"] = _dir_files(out)
            entry["sha256"] = _dir_digest(entry["files"])
        else:
            entry["sha256"] = sha256_file(out)
        record = {**shared, "output": entry}
        target = record_path(out)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n", encoding="utf-8")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(target)
    return written


def record_path(output: str | os.PathLike) -> Path:
    """Where the record of ``output`` lives (a directory's record sits beside it)."""
    out = Path(os.path.normpath(output))  # strips a trailing slash of a directory output
    return out.with_name(out.name + RECORD_SUFFIX)


def _calling_script() -> str | None:
    """The script on the call stack: the frame whose globals hold Snakemake's ``__real_file__``
    (its preamble points ``__file__`` at the real script, not the copy it runs), else the first
    caller outside this package and contextlib (wrappers such as ``smk.rule_context``)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    fallback = None
    frame = sys._getframe(1)
    while frame is not None:
        g = frame.f_globals
        if "__real_file__" in g:
            return g.get("__file__")
        name = g.get("__file__")
        if fallback is None and name and g.get("__name__") != "contextlib" \
                and not os.path.abspath(name).startswith(package):
            fallback = name
        frame = frame.f_back
    return fallback


class RuleProvenance:
    """Context manager for Snakemake scripts; records every output on successful exit.

    ``with RuleProvenance(snakemake, config_keys=["score"], seed=0) as prov: ...``; ``prov.seed``,
    ``prov.device`` and ``prov.extra`` may be set inside the block. The script recorded is found
    on the call stack (see :func:`_calling_script`); ``script=`` overrides it.
    """

    def __init__(self, smk, config_keys: Iterable[str] | None = None, seed: int | None = None,
                 device: str | None = None, script: str | os.PathLike | None = None, extra: dict | None = None):
        self.smk = smk
        self.config_keys = None if config_keys is None else list(config_keys)
        self.seed, self.device, self.extra = seed, device, dict(extra or {})
        self.script = script if script is not None else _calling_script()
        self.started_at: str | None = None
        self.records: list[Path] = []

    def config_subset(self) -> dict:
        config = getattr(self.smk, "config", None) or {}
        if self.config_keys is None:
            return config
        return {k: config.get(k) for k in self.config_keys}  # a missing key shows as null

    def __enter__(self) -> "RuleProvenance":
        self.started_at = now_iso()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:  # a failed rule's outputs get deleted by Snakemake; record nothing
            smk = self.smk
            self.records = write_records(
                list(smk.output), rule=getattr(smk, "rule", None) or "?", inputs=smk.input,
                params=getattr(smk, "params", {}), wildcards=getattr(smk, "wildcards", {}),
                config=self.config_subset(), script=self.script, seed=self.seed, device=self.device,
                started_at=self.started_at, extra=self.extra or None)
        return False


# ---------------------------------------------------------------------------- verification


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
PathText = Annotated[str, Field(min_length=1, pattern=r"^[^\x00]+$")]  # a NUL cannot be in a path
Kind = Literal["file", "directory", "symlink"]


class _Schema(BaseModel):
    # strict: no coercion (``"5"`` is no size, ``true`` no integer); fields verify does not read pass
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class OutputEntry(_Schema):
    path: PathText
    sha256: Sha256
    size: Annotated[int, Field(ge=0)]
    mtime: float | None = None
    mtime_ns: int | None = None
    kind: Kind | None = None  # absent in records written before kinds were recorded
    files: dict[PathText, Sha256] | None = None  # a directory's files (also a link to a directory)

    @model_validator(mode="after")
    def _consistent(self) -> "OutputEntry":
        if self.kind == "directory" and self.files is None:
            raise ValueError("a directory record must list its files")
        if self.kind == "file" and self.files is not None:
            raise ValueError("a file record cannot list files")
        if self.files is not None and _dir_digest(self.files) != self.sha256:
            raise ValueError("sha256 does not match the digest of the listed files")
        return self

    @property
    def recorded_kind(self) -> str:
        """The kind at writing time; older records without ``kind`` told it only by ``files``."""
        return self.kind or ("directory" if self.files is not None else "file")


class InputEntry(_Schema):
    name: str | None = None
    path: PathText
    sha256: Sha256 | None  # None: did not exist when the rule ran
    size: Annotated[int, Field(ge=0)] | None = None
    mtime_ns: int | None = None  # set for files, None for directories

    @property
    def recorded_kind(self) -> str | None:
        if self.sha256 is None:
            return None
        return "file" if self.mtime_ns is not None else "directory"


class Record(_Schema):
    """The fields of a ``.prov.json`` that ``verify`` relies on; the rest is kept as written."""
    record_version: Annotated[int, Field(ge=1, le=RECORD_VERSION)]
    rule: str
    output: OutputEntry
    inputs: list[InputEntry]


class BadRecord(ValueError):
    """A record that cannot be used; the message says why, in one line."""


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(e: ValidationError, shown: int = 3) -> str:
    errors = e.errors(include_url=False)
    parts = []
    for err in errors[:shown]:
        loc = ".".join(str(x) for x in err["loc"]) or "record"
        got = f" (got {_short_repr(err['input'])})" if err["type"] != "missing" else ""
        parts.append(f"{loc}: {err['msg']}{got}")
    if len(errors) > shown:
        parts.append(f"{len(errors) - shown} more")
    return "; ".join(parts)


def load_record(path: str | os.PathLike) -> Record:
    """Read and validate one record file; :class:`BadRecord` (one line) for anything unusable."""
    path = Path(path)
    try:
        if _kind(path, follow=True) != "file":  # a fifo would block the read, a device never end
            raise BadRecord("not a regular file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except BadRecord:
        raise
    except OSError as e:
        raise BadRecord(f"unreadable ({type(e).__name__}: {e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise BadRecord(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise BadRecord(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise BadRecord("JSON nested too deeply to read") from None
    try:
        return Record.model_validate(data)
    except ValidationError as e:
        raise BadRecord(_describe(e)) from None
    except RecursionError:
        raise BadRecord("nested too deeply to validate") from None


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _one_line(text: str) -> str:
    """Control characters, line separators and undecodable bytes of file names, escaped."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    # missing | modified | kind-changed | stale-input | input-missing | no-record | bad-record | unreadable
    kind: str
    detail: str

    def __post_init__(self):  # one line per problem, printable whatever the file names hold
        object.__setattr__(self, "path", _one_line(str(self.path)))
        object.__setattr__(self, "detail", _one_line(str(self.detail)))

    @property
    def severity(self) -> str:
        return "warning" if self.kind in WARNING_KINDS else "error"

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}"


def _workdir(out: Path, stored: str) -> Path:
    """The directory the recorded relative paths were relative to, found from where the output is now."""
    sp = Path(stored)
    n = len(sp.parts)
    if not sp.is_absolute() and n and out.parts[-n:] == sp.parts:
        return out.parents[n - 1]
    return Path.cwd()


def _a(kind: str | None) -> str:
    return {None: "nothing", "symlink": "a symlink", "other": "neither a file, a directory nor a symlink",
            "directory": "a directory"}.get(kind, f"a {kind}")


def _oserror(e: OSError) -> str:
    where = f" ({e.filename})" if e.filename else ""
    return f"{type(e).__name__}: {e.strerror or e}{where}"


def verify(root: str | os.PathLike, deep: bool = False, large_bytes: int = 256 * 2**20) -> list[Problem]:
    """Check every record under ``root`` against the files, and every file for a record.

    Files larger than ``large_bytes`` whose size and mtime match the record are not re-hashed
    unless ``deep``; a changed mtime always triggers a hash, so a copied tree still verifies.
    Bad records, unreadable files and changed kinds are problems of their own; nothing under
    ``root`` makes this raise.
    """
    root = Path(root)
    if not root.is_dir():
        raise ProvenanceError(f"{root}: not a directory")
    problems: list[Problem] = []
    records, others = [], []

    def walk_error(e: OSError):  # os.walk would skip an unreadable directory silently
        problems.append(Problem(str(e.filename or root), "unreadable", f"directory not searched ({_oserror(e)})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=walk_error):
        dirnames[:] = sorted(d for d in dirnames if d != ".snakemake")
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if name.endswith(RECORD_SUFFIX):
                records.append(full)
            elif not name.endswith(IGNORED_SUFFIXES) and name != SNAKEMAKE_TIMESTAMP:
                others.append(full)

    cache: dict[str, str] = {}  # each path hashed at most once per run (inputs are shared)

    def unchanged(path: Path, recorded: OutputEntry | InputEntry) -> tuple[bool, str]:
        """Whether ``path`` (a regular file or directory) still holds the recorded content; its sha
        ("" when trusted unhashed)."""
        if path.is_file():
            st = path.stat()
            if recorded.size is not None and st.st_size != recorded.size:
                return False, f"size {st.st_size}"
            if not deep and st.st_size > large_bytes and recorded.mtime_ns == st.st_mtime_ns:
                return True, ""
        key = os.path.abspath(path)
        sha = cache[key] = cache.get(key) or sha256_path(path)
        return sha == recorded.sha256, sha

    def check_output(out: Path, rec: Record) -> None:
        stored = rec.output
        was, now = stored.recorded_kind, _kind(out)
        if now is None:
            problems.append(Problem(str(out), "missing", f"recorded by rule {rec.rule} but absent"))
            return
        if now == "directory":
            covered_dirs.append(out)  # its files are this record's business, not stray files
        if now != was:
            dangling = " (dangling)" if now == "symlink" and _kind(out, follow=True) is None else ""
            problems.append(Problem(str(out), "kind-changed", f"recorded {_a(was)}, found {_a(now)}{dangling}"))
            return
        target = _kind(out, follow=True)  # differs from ``now`` only for a symlink
        if target == "directory" and stored.files is not None:
            current = _dir_files(out)
            changed = sorted(k for k in set(current) | set(stored.files) if current.get(k) != stored.files.get(k))
            if changed:
                problems.append(Problem(str(out), "modified", f"{len(changed)} file(s) differ from the record: "
                                                              f"{', '.join(changed[:5])}"))
        elif target == "file" and stored.files is None:
            same, sha = unchanged(out, stored)
            if not same:
                problems.append(Problem(str(out), "modified", f"recorded sha256 {stored.sha256}, now {sha}"))
        else:  # a symlink whose target changed kind
            recorded_target = "directory" if stored.files is not None else "file"
            problems.append(Problem(str(out), "modified", f"symlink to {_a(recorded_target)} when recorded, "
                                                          f"now to {_a(target)}"))

    def check_inputs(out: Path, rec: Record) -> None:
        workdir = _workdir(out, rec.output.path)
        for inp in rec.inputs:
            if inp.sha256 is None:
                continue  # did not exist when the rule ran: nothing to compare
            ipath = Path(inp.path)
            ipath = ipath if ipath.is_absolute() else workdir / ipath
            now = _kind(ipath, follow=True)  # inputs may be links: what counts is what they lead to
            if now is None:
                problems.append(Problem(str(out), "input-missing", f"input {inp.path} no longer exists"))
                continue
            if now != inp.recorded_kind:
                problems.append(Problem(str(out), "stale-input", f"input {inp.path} was {_a(inp.recorded_kind)} "
                                                                 f"when the output was made, now {_a(now)}"))
                continue
            try:
                same, sha = unchanged(ipath, inp)
            except OSError as e:
                problems.append(Problem(str(out), "unreadable", f"input {inp.path} cannot be hashed ({_oserror(e)})"))
                continue
            if not same:
                problems.append(Problem(str(out), "stale-input", f"input {inp.path} changed since the output "
                                                                 f"was made (recorded {inp.sha256}, now {sha})"))

    covered_files: set[Path] = set()
    covered_dirs: list[Path] = []
    for rec_path in records:
        out = rec_path.with_name(rec_path.name[: -len(RECORD_SUFFIX)])
        covered_files.add(out)
        try:
            rec = load_record(rec_path)
        except BadRecord as e:
            problems.append(Problem(str(rec_path), "bad-record", str(e)))
            if out.is_dir() and not out.is_symlink():
                covered_dirs.append(out)  # one problem for one bad record, not one per file inside
            continue
        try:
            check_output(out, rec)
        except OSError as e:
            problems.append(Problem(str(out), "unreadable", f"output cannot be hashed ({_oserror(e)})"))
        try:
            check_inputs(out, rec)
        except (OSError, ValueError) as e:  # e.g. a recorded path too long for the file system
            problems.append(Problem(str(out), "unreadable", f"inputs cannot be checked ({type(e).__name__}: {e})"))
    for f in others:
        if f in covered_files or any(d in f.parents for d in covered_dirs):
            continue
        problems.append(Problem(str(f), "no-record", "no provenance record covers this file"))
    return sorted(problems, key=lambda p: (p.path, p.kind, p.detail))
