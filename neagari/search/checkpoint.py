"""The search checkpoint: ``OUT/.checkpoint/checkpoint.json`` plus ``part-*.parquet`` iteration
records, written atomically and verified before a search resumes from it.

``checkpoint.json`` holds the format version, the search identity (what must match for a resume;
see ``Search.identity``) and its digest, the next iteration, the part files (name, sha256, rows) and
the accepted moves with the iteration each was accepted at, and ``sha256``: the hex sha256 of the
file's canonical content (every other key; sorted keys, no whitespace). Every write goes through a
temporary file, fsync and ``os.replace``, so a kill leaves the previous checkpoint or the new one.

:meth:`CheckpointStore.load` refuses a checkpoint that is not JSON, has no checksum (written before
checksums existed), fails its checksum, fails the schema, lies outside ``[0, iterations]``, names a
part file that is missing, changed or not an iteration table, lists accepted moves that the part
files do not record or that the search could not have proposed (outside its layers, projections or
scale bits); it raises :class:`CheckpointError` naming the file and saying what to do and
deletes nothing. A checkpoint of another search (different identity) is dropped with a warning and
the search starts afresh. Parts written after the last checkpoint are discarded on resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import pandera.errors as pa_errors
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neagari.files import atomic_write
from neagari.hashing import sha256_file
from neagari.search.patch import Move, PatchError
from neagari.search.schemas import SearchIterations
from neagari.tables import polars_schema

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.json"
CHECKPOINT_VERSION = 1
PART_PATTERN = r"^part-\d{5}\.parquet$"
_ITERATION_SCHEMA = polars_schema(SearchIterations)
_MOVE_KEYS = ("layer", "proj", "group", "move_type", "bit")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message (one line) names it and says what to do."""


# ---------------------------------------------------------------------------- schema


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class AcceptedMove(_Strict):
    iteration: Annotated[int, Field(ge=0)]
    layer: Annotated[int, Field(ge=0)]
    proj: Annotated[str, Field(min_length=1)]
    group: Annotated[int, Field(ge=0)]
    type: Literal["group", "scale", "negate", "zero_plus", "zero_minus"]
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    tensor_type: Literal["Q1_0", "Q2_0"] | None = None  # as a patch record has it: absent for Q1_0

    @model_validator(mode="after")
    def _bit_matches_type(self):
        if (self.type == "scale") != (self.bit is not None):
            raise ValueError("a scale move needs a bit and a group move has none")
        try:
            self.move()  # a move of the other format's kinds (a negate move on Q1_0) is refused
        except PatchError as e:
            raise ValueError(str(e)) from None
        return self

    def move(self) -> Move:
        return Move(self.layer, self.proj, self.group, self.type, self.bit, self.tensor_type)


class PartEntry(_Strict):
    name: Annotated[str, Field(pattern=PART_PATTERN)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    rows: Annotated[int, Field(ge=1)]


class CheckpointFile(_Strict):
    checkpoint_version: Literal[1]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    identity: dict[str, Any]
    identity_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    next_iteration: Annotated[int, Field(ge=0)]
    parts: list[PartEntry]
    accepted: list[AcceptedMove]

    @model_validator(mode="after")
    def _ordered(self):
        names = [p.name for p in self.parts]
        if len(set(names)) != len(names):
            raise ValueError("a part file is listed twice")
        its = [m.iteration for m in self.accepted]
        if any(b <= a for a, b in zip(its, its[1:])):
            raise ValueError("accepted moves are not in increasing iteration order")
        return self


def canonical_sha256(content: dict) -> str:
    """sha256 of a checkpoint's canonical JSON, every key but ``sha256`` itself."""
    body = {k: v for k, v in content.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def identity_sha256(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------------------- the store


@dataclass
class Resume:
    """What a verified checkpoint gives the search to resume with."""

    next_iteration: int
    moves: list[Move]
    parts: list[str]


class CheckpointStore:
    """Writes and verifies the checkpoint of one search in ``ckpt_dir``."""

    def __init__(self, ckpt_dir: str | os.PathLike, identity: dict, label: str = "search"):
        self.dir = Path(ckpt_dir)
        self.path = self.dir / CHECKPOINT_NAME
        self.identity = identity
        self.label = label
        self._parts: dict[str, PartEntry] = {}
        self._accepted_at: list[int] = []

    # ------------------------------------------------------------------ write
    def save(self, t: int, accepted: list[Move], pending: list[dict], parts: list[str]) -> None:
        """Write ``pending`` (iteration records since the last save) as a new part, append its name to
        ``parts``, clear ``pending``, then write the checkpoint at next iteration ``t``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if pending:
            name = f"part-{len(parts):05d}.parquet"
            path = self.dir / name
            atomic_write(path, pl.DataFrame(pending).write_parquet)
            self._parts[name] = PartEntry(name=name, sha256=sha256_file(path), rows=len(pending))
            self._accepted_at += [int(r["iteration"]) for r in pending if r["accepted"]]
            parts.append(name)
            pending.clear()
        if len(self._accepted_at) != len(accepted):
            raise RuntimeError(f"{self.label}: {len(accepted)} accepted moves but {len(self._accepted_at)} "
                               "accepted iteration records")
        content: dict[str, Any] = {
            "checkpoint_version": CHECKPOINT_VERSION, "identity": self.identity,
            "identity_sha256": identity_sha256(self.identity), "next_iteration": int(t),
            "parts": [self._part(p).model_dump() for p in parts],
            "accepted": [{"iteration": it, **m.to_record(), "bit": m.bit}
                         for it, m in zip(self._accepted_at, accepted)]}
        content["sha256"] = canonical_sha256(content)
        data = (json.dumps(content, sort_keys=True) + "\n").encode()
        atomic_write(self.path, lambda tmp: tmp.write_bytes(data))

    def _part(self, name: str) -> PartEntry:
        if name not in self._parts:  # not written by this store: hash what is there
            path = self.dir / name
            rows = pl.scan_parquet(path).select(pl.len()).collect().item()
            self._parts[name] = PartEntry(name=name, sha256=sha256_file(path), rows=rows)
        return self._parts[name]

    # ------------------------------------------------------------------ read
    def _refuse(self, problem: str) -> CheckpointError:
        problem = " ".join(str(problem).split())  # one line, whatever an underlying error said
        return CheckpointError(f"{self.path}: {problem}; delete {self.dir} to start the search afresh")

    def load(self, iterations: int, n_groups: Mapping[tuple[int, str], int] | None = None) -> Resume | None:
        """The verified checkpoint, None when there is none (or it belongs to another search, which is
        then removed with a warning); :class:`CheckpointError` when it cannot be trusted.
        ``n_groups``: groups per (layer, tensor) of the model, to refuse moves outside a tensor."""
        if not self.path.exists() and not self.path.is_symlink():
            return None
        ck = self._read()
        if ck.identity != self.identity:
            log.warning("%s: checkpoint belongs to another configuration; starting afresh", self.label)
            shutil.rmtree(self.dir)
            return None
        if ck.next_iteration > iterations:
            raise self._refuse(f"next_iteration {ck.next_iteration} is beyond the search's {iterations} "
                               "iterations")
        self._verify_parts(ck)
        self._check_moves(ck, n_groups or {})
        self._parts = {p.name: p for p in ck.parts}
        self._accepted_at = [m.iteration for m in ck.accepted]
        listed = {p.name for p in ck.parts}
        for stray in self.dir.iterdir():  # written after the last checkpoint
            if (stray.name.startswith("part-") and stray.name.endswith(".parquet") and stray.name not in listed) \
                    or stray.name.endswith(".tmp"):
                stray.unlink()
        return Resume(ck.next_iteration, [m.move() for m in ck.accepted], [p.name for p in ck.parts])

    def _read(self) -> CheckpointFile:
        try:
            if not self.path.is_file():
                raise self._refuse("not a regular file")
            raw = self.path.read_bytes()
        except OSError as e:
            raise self._refuse(f"unreadable ({type(e).__name__}: {e.strerror or e})") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._refuse(f"not valid JSON ({_brief(e)}; the file is truncated or damaged)") from None
        except RecursionError:
            raise self._refuse("not usable JSON (nested too deeply; the file is damaged)") from None
        try:
            return self._check(data)
        except RecursionError:  # nested just under the parser's limit: too deep to hash or compare
            raise self._refuse("not usable JSON (nested too deeply; the file is damaged)") from None

    def _check(self, data) -> CheckpointFile:
        if not isinstance(data, dict):
            raise self._refuse(f"not a checkpoint (a JSON {type(data).__name__}, not an object)")
        if "sha256" not in data:
            raise self._refuse("has no checksum (written by an older neagari, or not a checkpoint); "
                               "checkpoints are transient and are not carried across versions")
        if data["sha256"] != canonical_sha256(data):
            raise self._refuse("checksum mismatch (the file was changed or truncated)")
        try:
            ck = CheckpointFile.model_validate(data)
        except ValidationError as e:
            raise self._refuse(f"does not match the checkpoint schema ({_describe(e)})") from None
        if ck.identity_sha256 != identity_sha256(ck.identity):
            raise self._refuse("identity_sha256 does not match its identity")
        return ck

    def _check_moves(self, ck: CheckpointFile, n_groups: Mapping[tuple[int, str], int]) -> None:
        """Accepted moves the search could have proposed: in its layers and projections, a scale
        move on one of its scale bits (the identity's proposal settings). A move outside them would
        fail in the replay, far from the checkpoint that holds it."""
        config = self.identity.get("config")
        prop = config.get("proposal") if isinstance(config, dict) else None
        if not isinstance(prop, dict):
            return
        layers, projs, bits = prop.get("layers"), prop.get("projections"), prop.get("scale_bits")
        for m in ck.accepted:
            where = f"accepted move at iteration {m.iteration}"
            if isinstance(layers, list) and m.layer not in layers:
                raise self._refuse(f"{where} is in layer {m.layer}, not one of the search's layers {layers}")
            if isinstance(projs, list) and m.proj not in {f"{p}.weight" for p in projs}:
                raise self._refuse(f"{where} moves {_short(m.proj)}, not one of the search's projections "
                                   f"{', '.join(map(str, projs))}")
            if m.type == "scale" and isinstance(bits, list) and m.bit not in bits:
                raise self._refuse(f"{where} flips scale bit {m.bit}, not one of the search's scale bits {bits}")
            n = n_groups.get((m.layer, m.proj))
            if n is not None and not 0 <= m.group < n:
                raise self._refuse(f"{where} is group {m.group} of blk.{m.layer}.{_short(m.proj)}, which has "
                                   f"{n} groups")

    def _verify_parts(self, ck: CheckpointFile) -> None:
        frames = []
        for p in ck.parts:
            path = self.dir / p.name
            if not path.is_file():
                raise self._refuse(f"part file {p.name} named in the checkpoint is missing")
            if sha256_file(path) != p.sha256:
                raise self._refuse(f"part file {p.name} was changed since the checkpoint was written")
            try:
                df = pl.read_parquet(path)
            except (OSError, pl.exceptions.PolarsError) as e:
                raise self._refuse(f"part file {p.name} is not readable ({type(e).__name__}: {_brief(e)})") from None
            if set(df.columns) != set(_ITERATION_SCHEMA):
                raise self._refuse(f"part file {p.name} has columns {sorted(df.columns)}, not the iteration "
                                   "table's")
            # the search writes each column at its schema type, or Null when every value is None: a
            # castable other type (iterations as strings) would pass here but break the resume's reads
            wrong = next((c for c, t in _ITERATION_SCHEMA.items() if df.schema[c] not in (t, pl.Null)), None)
            if wrong is not None:
                raise self._refuse(f"part file {p.name} column {wrong!r} is {df.schema[wrong]}, not the iteration "
                                   f"table's {_ITERATION_SCHEMA[wrong]}")
            if df.height != p.rows:
                raise self._refuse(f"part file {p.name} has {df.height} rows, the checkpoint says {p.rows}")
            try:
                frames.append(df.select(list(_ITERATION_SCHEMA)).cast(_ITERATION_SCHEMA))
            except pl.exceptions.PolarsError as e:
                raise self._refuse(f"part file {p.name} does not hold the iteration table's types "
                                   f"({type(e).__name__}: {_brief(e)})") from None
        df = pl.concat(frames) if frames else pl.DataFrame(schema=_ITERATION_SCHEMA)
        try:
            SearchIterations.validate(df)
        except (pa_errors.SchemaError, pa_errors.SchemaErrors) as e:
            raise self._refuse(f"the part files fail the iteration schema ({_brief(e)})") from None
        its = df["iteration"].sort().to_list()
        if its != list(range(ck.next_iteration)):
            lo, hi = (its[0], its[-1]) if its else (None, None)
            raise self._refuse(f"the part files record {len(its)} iterations ({lo}..{hi}), not the "
                               f"{ck.next_iteration} before next_iteration")
        rows = {r["iteration"]: r for r in df.filter(pl.col("accepted")).iter_rows(named=True)}
        for m in ck.accepted:
            row = rows.get(m.iteration)
            want = (m.layer, m.proj, m.group, m.type, m.bit)
            if row is None or tuple(row[k] for k in _MOVE_KEYS) != want:
                raise self._refuse(f"accepted move at iteration {m.iteration} is not an accepted row of the "
                                   "part files")
        if len(rows) != len(ck.accepted):
            extra = sorted(set(rows) - {m.iteration for m in ck.accepted})
            raise self._refuse(f"the part files record {len(rows)} accepted moves but the checkpoint lists "
                               f"{len(ck.accepted)} (first unlisted at iteration {extra[0]})")


def _describe(e: ValidationError, shown: int = 2) -> str:
    errors = e.errors(include_url=False)
    parts = []
    for err in errors[:shown]:
        loc = ".".join(str(x) for x in err["loc"]) or "checkpoint"
        got = "" if err["type"] == "missing" else f" (got {_short(err['input'])})"
        parts.append(f"{loc}: {err['msg']}{got}")
    if len(errors) > shown:
        parts.append(f"{len(errors) - shown} more")
    return "; ".join(parts)


def _brief(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
