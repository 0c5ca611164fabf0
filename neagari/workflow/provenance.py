"""Provenance records: what made each output, checked later by ``verify``.

Snakemake hashes neither files over 1 MB nor script contents, so every rule's script writes,
through :class:`RuleProvenance`, a sidecar ``<output>.prov.json`` per output: the hashes of its
inputs, of itself and of the script, the rule's params/wildcards/config, the git commit and the
package versions. A directory output gets ``<dir>.prov.json`` with a hash per contained file.
The record lies next to its output, so a tree can be moved and still verified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

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
        entry: dict[str, Any] = {"path": _rel(out), "size": _size(out), "mtime": st.st_mtime,
                                 "mtime_ns": st.st_mtime_ns}
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


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    kind: str  # missing | modified | stale-input | input-missing | no-record | bad-record
    detail: str

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


def verify(root: str | os.PathLike, deep: bool = False, large_bytes: int = 256 * 2**20) -> list[Problem]:
    """Check every record under ``root`` against the files, and every file for a record.

    Files larger than ``large_bytes`` whose size and mtime match the record are not re-hashed
    unless ``deep``; a changed mtime always triggers a hash, so a copied tree still verifies.
    """
    root = Path(root)
    if not root.is_dir():
        raise ProvenanceError(f"{root}: not a directory")
    records, others = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".snakemake")
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if name.endswith(RECORD_SUFFIX):
                records.append(full)
            elif not name.endswith(IGNORED_SUFFIXES) and name != SNAKEMAKE_TIMESTAMP:
                others.append(full)

    problems: list[Problem] = []
    cache: dict[str, str] = {}  # each path hashed at most once per run (inputs are shared)

    def unchanged(path: Path, recorded: Mapping) -> tuple[bool, str]:
        """Whether ``path`` still holds the recorded content; its sha ("" when trusted unhashed)."""
        if path.is_file():
            st = path.stat()
            if recorded.get("size") is not None and st.st_size != recorded["size"]:
                return False, f"size {st.st_size}"
            if not deep and st.st_size > large_bytes and recorded.get("mtime_ns") == st.st_mtime_ns:
                return True, ""
        key = os.path.abspath(path)
        sha = cache[key] = cache.get(key) or sha256_path(path)
        return sha == recorded.get("sha256"), sha

    covered_files, covered_dirs = set(), []
    for rec_path in records:
        out = rec_path.with_name(rec_path.name[: -len(RECORD_SUFFIX)])
        covered_files.add(out)
        try:
            rec = json.loads(rec_path.read_text(encoding="utf-8"))
            stored = rec["output"]
            inputs = rec.get("inputs", [])
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append(Problem(str(rec_path), "bad-record", f"unreadable record ({type(e).__name__}: {e})"))
            continue
        if not out.exists():
            problems.append(Problem(str(out), "missing", f"recorded by rule {rec.get('rule')} but absent"))
            continue
        if out.is_dir():
            covered_dirs.append(out)
            now = _dir_files(out)
            was = stored.get("files", {})
            changed = sorted(k for k in set(now) | set(was) if now.get(k) != was.get(k))
            if changed:
                problems.append(Problem(str(out), "modified", f"{len(changed)} file(s) differ from the record: "
                                                              f"{', '.join(changed[:5])}"))
        else:
            same, sha = unchanged(out, stored)
            if not same:
                problems.append(Problem(str(out), "modified", f"recorded sha256 {stored.get('sha256')}, now {sha}"))
        workdir = _workdir(out, str(stored.get("path", "")))
        for inp in inputs:
            if inp.get("sha256") is None:
                continue  # did not exist when the rule ran: nothing to compare
            ipath = Path(inp["path"])
            ipath = ipath if ipath.is_absolute() else workdir / ipath
            if not ipath.exists():
                problems.append(Problem(str(out), "input-missing", f"input {inp['path']} no longer exists"))
                continue
            same, sha = unchanged(ipath, inp)
            if not same:
                problems.append(Problem(str(out), "stale-input", f"input {inp['path']} changed since the output "
                                                                 f"was made (recorded {inp['sha256']}, now {sha})"))
    for f in others:
        if f in covered_files or any(d in f.parents for d in covered_dirs):
            continue
        problems.append(Problem(str(f), "no-record", "no provenance record covers this file"))
    return sorted(problems, key=lambda p: (p.path, p.kind, p.detail))
