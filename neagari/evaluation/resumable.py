"""Item-by-item evaluation that survives being killed (a preempted cluster job, a crash).

Every finished item's record is appended to a *partial file* next to the output
(``<output>.partial.jsonl``) and flushed to disk before the next item starts. The file's first
line is a header saying what the records were computed with (the model's sha256, the generation
settings, and the item set's hash, which :func:`evaluate_resumable` adds itself); the records
follow, one JSON object a line, in item order. A run that finds a partial file with the same
header skips the items it holds and goes on from the next one; a partial file made with anything
else is refused (one line), never mixed in. Once every item is done the result is written and
the partial file removed.

The records must be JSON-representable (strings, numbers, booleans, lists, mappings); a record
read back equals the one written, so a resumed run returns exactly what an uninterrupted one does.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from neagari.hashing import sha256_bytes

PARTIAL_SUFFIX = ".partial.jsonl"
FORMAT = 1

log_default = logging.getLogger("neagari.evaluation.resumable")


class PartialFileError(RuntimeError):
    """A partial file that cannot be resumed from (other settings, other items, damaged). One line."""


def partial_path(output: str | os.PathLike) -> Path:
    """Where the partial records of ``output`` are kept: next to it."""
    output = Path(output)
    return output.with_name(output.name + PARTIAL_SUFFIX)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def items_digest(items: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the items, in order (canonical JSON): any change to any item changes it."""
    return sha256_bytes(_canonical(list(items)).encode("utf-8"))


def full_header(items: Sequence[Mapping[str, Any]], header: Mapping[str, Any]) -> dict:
    """The header a partial file of these items under these settings starts with."""
    return {"format": FORMAT, "items": {"n": len(items), "sha256": items_digest(items)}, **header}


def _read(partial: Path, header: dict, ids: Sequence[Any], key: str) -> tuple[list[dict], int]:
    """The records of a partial file and the byte length of its complete lines; refuses a file
    that is not a prefix of this run's records."""
    data = partial.read_bytes()
    good = data.rfind(b"\n") + 1  # a last line without its newline was torn by the kill: dropped
    lines = data[:good].decode("utf-8").splitlines()
    if not lines:
        return [], 0
    try:
        head = json.loads(lines[0])["header"]
    except (ValueError, KeyError, TypeError):
        raise PartialFileError(f"{partial}: not a partial-results file (no header line); "
                               "delete it to start over") from None
    if _canonical(head) != _canonical(header):
        keys = sorted(k for k in set(head) | set(header) if _canonical(head.get(k)) != _canonical(header.get(k)))
        raise PartialFileError(f"{partial}: made with other settings (differs in {', '.join(keys)}); refusing "
                               "to mix its records in: delete it to start over")
    records = []
    for n, line in enumerate(lines[1:], start=2):
        try:
            rec = json.loads(line)
        except ValueError:
            raise PartialFileError(f"{partial}: line {n} is not JSON; delete the file to start over") from None
        i = len(records)
        if i >= len(ids) or not isinstance(rec, dict) or rec.get(key) != ids[i]:
            raise PartialFileError(f"{partial}: line {n} is not the record of item {i} "
                                   f"({ids[i] if i < len(ids) else 'none left'!r}); delete the file to start over")
        records.append(rec)
    return records, good


def evaluate_resumable(items: Sequence[Mapping[str, Any]], evaluate: Callable[[Mapping[str, Any]], dict],
                       partial: str | os.PathLike, header: Mapping[str, Any], *,
                       restore: Callable[[Mapping[str, Any], dict], dict] | None = None,
                       write: Callable[[list[dict]], Any] | None = None, key: str = "id",
                       log: logging.Logger | None = None) -> list[dict]:
    """``[evaluate(item) for item in items]``, resumable through the partial file ``partial``.

    evaluate: one item -> its record, which carries the item's ``key`` (``id``).
    header: what the records depend on besides the items (model hash, generation settings);
        JSON-representable. A partial file with another header, or other items, is refused
        (:class:`PartialFileError`).
    restore: applied to each record read back from the partial file (e.g. to score a stored output
        again with the current scorer), so that resumed records are what ``evaluate`` gives now.
    write: called with all records once every item is done; the partial file is removed only
        after it returns. Without it the partial file is left for the caller to remove.
    Returns the records in item order.
    """
    log = log or log_default
    partial = Path(partial)
    header = full_header(items, header)
    ids = [it[key] for it in items]
    records: list[dict] = []
    good = 0
    if partial.exists():
        records, good = _read(partial, header, ids, key)
        if restore is not None:
            records = [restore(it, rec) for it, rec in zip(items, records)]
        if records:
            log.info("%s: resuming after %d of %d items", partial, len(records), len(items))
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "r+b" if good else "wb") as f:
        f.truncate(good)
        f.seek(good)
        if not good:
            f.write((_canonical({"header": header}) + "\n").encode("utf-8"))
        for it in items[len(records):]:
            rec = evaluate(it)
            if rec.get(key) != it[key]:
                raise ValueError(f"the record of item {it[key]!r} has {key} {rec.get(key)!r}")
            f.write((json.dumps(rec, sort_keys=True) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
            records.append(rec)
    if write is not None:
        write(records)
        partial.unlink()
    return records
