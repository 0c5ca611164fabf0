"""Probes (prompt, correct next token, wrong next token) in the upstream JSON schema, and scoring.

Upstream files hold ``{"probes": {"target": [...], "promoted_controls": [...], ...}}`` or a plain
``{"probes": [...]}`` list. A probe's token ids are ``base_correct_id``/``base_wrong_id`` when
calibration stored them, otherwise the first token of ``correct``/``wrong``.

Files are validated at the boundary: ``load_probes`` checks the document and every probe against
a strict schema (ProbeDocument, ProbeRecord: no coercion of 5.7, "5" or true into a token id),
and ``encode_probes`` runs the checks that need the model (vocabulary, context length, distinct
answers) before scoring, search or calibration does any work. Every failure is one ProbeError line
naming the file and the probe.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Sequence

import polars as pl
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)


class ProbeError(ValueError):
    """A probe file that cannot be used; one-line reason."""


@dataclass(frozen=True)
class Probe:
    name: str
    prompt: str
    correct: str
    wrong: str
    role: str = "target"  # the key of the probe group it came from
    correct_id: int | None = None
    wrong_id: int | None = None
    base_gap: float | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    where: str = field(default="", compare=False, hash=False, repr=False)  # "file.json:probes.target[3]"

    @property
    def label(self) -> str:
        """How errors name the probe: its place in its file and its name."""
        return f"{self.where} (name {_show(self.name)})" if self.where else f"probe {_show(self.name)}"


# ---------------------------------------------------------------------------- the schema
# Types are strict: 5.7, "5" and true are not token ids. Keys other than these are carried in
# Probe.extra unvalidated (category, source, heuristic_wrong, system, ... of upstream and our files).
TokenId = Annotated[int, Field(ge=0)]


class ProbeRecord(BaseModel):
    """One probe of a probe file (upstream schema)."""

    model_config = ConfigDict(strict=True, extra="allow")
    name: str = ""
    prompt: str
    correct: str
    wrong: str
    base_correct_id: TokenId | None = None
    base_wrong_id: TokenId | None = None
    base_gap: float | None = None


class ProbeDocument(BaseModel):
    """A probe file: an object whose ``probes`` is a list of probes or an object of named lists
    (``target``, ``control``, ``promoted_controls``, ...). Other top-level keys (domain, version,
    source, search_config, _calibration, ...) are allowed and ignored."""

    model_config = ConfigDict(strict=True, extra="allow")
    probes: list[Any] | dict[str, list[Any]]


KNOWN = tuple(ProbeRecord.model_fields)
_KINDS = {"int_type": "an integer", "string_type": "a string", "float_type": "a number",
          "dict_type": "an object", "list_type": "a list", "model_type": "an object"}


def _show(v, limit: int = 60) -> str:
    """A value for a one-line message: repr, shortened."""
    try:
        r = repr(v)
    except RecursionError:
        r = f"<a deeply nested {type(v).__name__}>"
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _not_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _first_error(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(x) for x in err["loc"]) or "value"
    kind = _KINDS.get(err["type"])
    if err["type"] == "missing":
        return f"{loc} is missing"
    if kind:
        return f"{loc} must be {kind}, got {_show(err['input'])}"
    if err["type"] == "greater_than_equal":
        return f"{loc} must be >= {err['ctx']['ge']}, got {_show(err['input'])}"
    return f"{loc}: {err['msg'].splitlines()[0]}, got {_show(err['input'])}"


def _group_path(role: str) -> str:
    return f"probes.{role}" if role.isidentifier() else f"probes[{_show(role)}]"


def probe_from_dict(d: dict, role: str, where: str, distinct: bool = True) -> Probe:
    """One probe of a probe file (upstream schema), validated; ``where`` names it in errors.

    ``distinct``: refuse a probe whose correct and wrong answers are the same (same string, or
    the same stored token id): its gap is 0 whatever the weights. Calibration passes False, since
    it replaces the wrong answer.
    """
    if not isinstance(d, dict):
        raise ProbeError(f"{where}: a probe must be an object, got {type(d).__name__}")
    name = d.get("name")
    label = f"{where} (name {_show(name)})" if isinstance(name, str) else where
    for k in d:  # the schema cannot read such a key: say so rather than quote pydantic
        if _not_utf8(k):
            raise ProbeError(f"{label}: key {_show(k)} is not valid Unicode text (a lone surrogate)")
    try:
        ProbeRecord.model_validate(d)
    except ValidationError as e:
        raise ProbeError(f"{label}: {_first_error(e)}") from None
    for k in ("name", "prompt", "correct", "wrong"):
        if k in d and _not_utf8(d[k]):
            raise ProbeError(f"{label}: {k} is not valid Unicode text (a lone surrogate), got {_show(d[k])}")
    c_id, w_id = d.get("base_correct_id"), d.get("base_wrong_id")
    if distinct:
        if c_id is not None and c_id == w_id:
            raise ProbeError(f"{label}: base_correct_id and base_wrong_id are the same token {c_id}; "
                             "the gap would be 0 whatever the weights")
        if d["correct"] == d["wrong"] and (c_id is None or w_id is None):
            raise ProbeError(f"{label}: correct and wrong are the same text {_show(d['correct'])}; "
                             "the gap would be 0 whatever the weights")
    return Probe(name=str(d.get("name", where)), prompt=d["prompt"], correct=d["correct"], wrong=d["wrong"],
                 role=role, correct_id=c_id, wrong_id=w_id, base_gap=d.get("base_gap"),
                 extra={k: v for k, v in d.items() if k not in KNOWN}, where=where)


def probe_groups(doc, where: str) -> dict[str, list]:
    """The probe groups of a parsed probe document (a plain list becomes ``target``)."""
    if not isinstance(doc, dict):
        raise ProbeError(f"{where}: the top level must be an object with a 'probes' key, got {type(doc).__name__}")
    if "probes" not in doc:
        raise ProbeError(f"{where}: expected an object with a 'probes' list or object")
    for key in doc:
        if _not_utf8(key):
            raise ProbeError(f"{where}: top-level key {_show(key)} is not valid Unicode text (a lone surrogate)")
    try:
        ProbeDocument.model_validate(doc)
    except ValidationError:
        groups = doc["probes"]
        if isinstance(groups, dict):
            role = next((r for r, v in groups.items() if not isinstance(v, list)), None)
            if role is None:  # every group a list: a key the schema cannot read
                raise ProbeError(f"{where}: 'probes' must be a list or an object of lists") from None
            raise ProbeError(f"{where}: {_group_path(role)} is not a list") from None
        raise ProbeError(f"{where}: 'probes' must be a list or an object of lists, "
                         f"got {type(groups).__name__}") from None
    groups = doc["probes"]
    groups = {"target": groups} if isinstance(groups, list) else groups
    for role in groups:
        if _not_utf8(role):
            raise ProbeError(f"{where}: probe group name {_show(role)} is not valid Unicode text")
    return groups


def load_probes(path: str | os.PathLike, roles: Sequence[str] | None = None, allow_empty: bool = False) -> list[Probe]:
    """All probes of a file, in file order, each tagged with its group (``role``), validated
    against the schema (ProbeDocument, ProbeRecord). Any problem is a one-line ProbeError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProbeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ProbeError(f"{path}: is a directory, not a probe file") from None
    except OSError as e:
        raise ProbeError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProbeError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProbeError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ProbeError(f"{path}: not usable JSON (nested too deeply)") from None
    out = []
    for role, items in probe_groups(doc, str(path)).items():
        if roles is not None and role not in roles:
            continue
        out += [probe_from_dict(d, role, f"{path.name}:{_group_path(role)}[{i}]") for i, d in enumerate(items)]
    if not out and not allow_empty:
        raise ProbeError(f"{path}: no probes found")
    return out


def token_ids(probe: Probe, tokenizer) -> tuple[list[int], int, int]:
    """(prompt ids, correct id, wrong id) under a tokenizer."""
    ids = tokenizer.encode(probe.prompt)
    if not ids:
        raise ProbeError(f"{probe.label}: empty prompt")

    def first(text: str, given: int | None) -> int:
        if given is not None:
            return int(given)
        t = tokenizer.encode(text)
        if not t:
            raise ProbeError(f"{probe.label}: {text!r} has no tokens")
        return t[0]

    return ids, first(probe.correct, probe.correct_id), first(probe.wrong, probe.wrong_id)


def context_length(engine) -> int:
    """Positions the engine's model can take (its load-time cap, else the file's context)."""
    opts = getattr(engine, "opts", None)
    return int(getattr(opts, "max_positions", None) or engine.cfg.context_length)


def encode_probes(engine, probes: Sequence[Probe], distinct: bool = True) -> list[tuple[list[int], int, int]]:
    """``token_ids`` of every probe, after the checks that need the model; the first failure is a
    one-line ProbeError naming the probe. Scoring, search and calibration call it before any work.

    - both ids inside the vocabulary;
    - prompt tokens + 1 (the position of the scored next token) <= the context length;
    - ``distinct``: the correct and wrong ids differ when either is a stored id (a heuristic
      first-token collision of two different texts is only warned about: it is how uncalibrated
      files such as resources/probes/smoke.json behave before calibration replaces the wrong token).
    """
    vocab, ctx = engine.cfg.vocab_size, context_length(engine)
    out = []
    for p in probes:
        ids, c, w = token_ids(p, engine.tokenizer)
        for key, given, text, i in (("base_correct_id", p.correct_id, "correct", c),
                                    ("base_wrong_id", p.wrong_id, "wrong", w)):
            if not 0 <= i < vocab:
                what = key if given is not None else f"the first token of {text}"
                raise ProbeError(f"{p.label}: {what} is {i}, outside the vocabulary of {vocab} tokens")
        if len(ids) + 1 > ctx:
            raise ProbeError(f"{p.label}: prompt is {len(ids)} tokens; with the scored next token it needs "
                             f"{len(ids) + 1} positions, the model's context length is {ctx}")
        if distinct and c == w:
            if p.correct_id is not None or p.wrong_id is not None:
                raise ProbeError(f"{p.label}: correct and wrong are the same token {c} after tokenization; "
                                 "the gap would be 0 whatever the weights")
            log.warning("%s: correct %r and wrong %r start with the same token %d; its gap is 0 until "
                        "calibration", p.label, p.correct, p.wrong, c)
        out.append((ids, c, w))
    return out


def top_rival(logits: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Per row, the highest-scoring token that is not the correct one. logits (P, V), correct (P,)
    → ids (P,). Calibration's wrong token, and the rank-2 drift audit's current rival."""
    masked = logits.clone()
    masked[torch.arange(len(correct)), correct] = float("-inf")
    return masked.argmax(-1)


def score_probes(engine, probes: Sequence[Probe], batch_size: int = 64) -> pl.DataFrame:
    """One row per probe: gap = logit(correct) − logit(wrong) at the prompt's last position."""
    encoded = encode_probes(engine, probes)
    logits = torch.stack(engine.logits([e[0] for e in encoded], batch_size=batch_size))
    c_ids = torch.tensor([e[1] for e in encoded])
    w_ids = torch.tensor([e[2] for e in encoded])
    rows = torch.arange(len(probes))
    lc, lw = logits[rows, c_ids], logits[rows, w_ids]
    top1 = logits.argmax(-1).tolist()
    piece = engine.tokenizer.decode
    return pl.DataFrame({
        "name": [p.name for p in probes],
        "role": [p.role for p in probes],
        "n_prompt_tokens": [len(e[0]) for e in encoded],
        "correct_id": c_ids.tolist(),
        "wrong_id": w_ids.tolist(),
        "correct_logit": lc.tolist(),
        "wrong_logit": lw.tolist(),
        "gap": (lc - lw).tolist(),
        "top1_id": top1,
        # the tokens as text, so a reader sees what was compared and what the model prefers
        "correct_token": [piece([i]) for i in c_ids.tolist()],
        "wrong_token": [piece([i]) for i in w_ids.tolist()],
        "top1_token": [piece([i]) for i in top1],
    }, schema_overrides={"correct_logit": pl.Float64, "wrong_logit": pl.Float64, "gap": pl.Float64})
