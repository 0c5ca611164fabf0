"""Probes (prompt, correct next token, wrong next token) in the upstream JSON schema, and scoring.

Upstream files hold ``{"probes": {"target": [...], "promoted_controls": [...], ...}}`` or a plain
``{"probes": [...]}`` list. A probe's token ids are ``base_correct_id``/``base_wrong_id`` when
calibration stored them, otherwise the first token of ``correct``/``wrong``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import polars as pl
import torch


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


def probe_from_dict(d: dict, role: str, where: str) -> Probe:
    """One probe of a probe file (upstream schema); ``where`` names it in errors."""
    if not isinstance(d, dict):
        raise ProbeError(f"{where}: a probe must be an object, got {type(d).__name__}")
    for k in ("prompt", "correct", "wrong"):
        if not isinstance(d.get(k), str):
            raise ProbeError(f"{where}: probe {d.get('name', '?')!r} lacks a string {k!r}")
    known = {"name", "prompt", "correct", "wrong", "base_correct_id", "base_wrong_id", "base_gap"}
    return Probe(name=str(d.get("name", where)), prompt=d["prompt"], correct=d["correct"], wrong=d["wrong"],
                 role=role, correct_id=d.get("base_correct_id"), wrong_id=d.get("base_wrong_id"),
                 base_gap=d.get("base_gap"), extra={k: v for k, v in d.items() if k not in known})


def load_probes(path: str | os.PathLike, roles: Sequence[str] | None = None, allow_empty: bool = False) -> list[Probe]:
    """All probes of a file, in file order, each tagged with its group (``role``)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProbeError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProbeError(f"{path}: not valid JSON ({e})") from None
    groups = doc.get("probes") if isinstance(doc, dict) else doc
    if isinstance(groups, list):
        groups = {"target": groups}
    if not isinstance(groups, dict):
        raise ProbeError(f"{path}: expected an object with a 'probes' list or object")
    out = []
    for role, items in groups.items():
        if roles is not None and role not in roles:
            continue
        if not isinstance(items, list):
            raise ProbeError(f"{path}: probes.{role} is not a list")
        out += [probe_from_dict(d, role, f"{path.name}:probes.{role}[{i}]") for i, d in enumerate(items)]
    if not out and not allow_empty:
        raise ProbeError(f"{path}: no probes found")
    return out


def token_ids(probe: Probe, tokenizer) -> tuple[list[int], int, int]:
    """(prompt ids, correct id, wrong id) under a tokenizer."""
    ids = tokenizer.encode(probe.prompt)
    if not ids:
        raise ProbeError(f"probe {probe.name!r}: empty prompt")

    def first(text: str, given: int | None) -> int:
        if given is not None:
            return int(given)
        t = tokenizer.encode(text)
        if not t:
            raise ProbeError(f"probe {probe.name!r}: {text!r} has no tokens")
        return t[0]

    return ids, first(probe.correct, probe.correct_id), first(probe.wrong, probe.wrong_id)


def top_rival(logits: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Per row, the highest-scoring token that is not the correct one. logits (P, V), correct (P,)
    → ids (P,). Calibration's wrong token, and the rank-2 drift audit's current rival."""
    masked = logits.clone()
    masked[torch.arange(len(correct)), correct] = float("-inf")
    return masked.argmax(-1)


def score_probes(engine, probes: Sequence[Probe], batch_size: int = 64) -> pl.DataFrame:
    """One row per probe: gap = logit(correct) − logit(wrong) at the prompt's last position."""
    encoded = [token_ids(p, engine.tokenizer) for p in probes]
    vocab = engine.cfg.vocab_size
    for p, (_, c, w) in zip(probes, encoded):
        if not (0 <= c < vocab and 0 <= w < vocab):
            raise ProbeError(f"probe {p.name!r}: token id outside the vocabulary of {vocab}")
    logits = torch.stack(engine.logits([e[0] for e in encoded], batch_size=batch_size))
    c_ids = torch.tensor([e[1] for e in encoded])
    w_ids = torch.tensor([e[2] for e in encoded])
    rows = torch.arange(len(probes))
    lc, lw = logits[rows, c_ids], logits[rows, w_ids]
    return pl.DataFrame({
        "name": [p.name for p in probes],
        "role": [p.role for p in probes],
        "n_prompt_tokens": [len(e[0]) for e in encoded],
        "correct_id": c_ids.tolist(),
        "wrong_id": w_ids.tolist(),
        "correct_logit": lc.tolist(),
        "wrong_logit": lw.tolist(),
        "gap": (lc - lw).tolist(),
        "top1_id": logits.argmax(-1).tolist(),
    }, schema_overrides={"correct_logit": pl.Float64, "wrong_logit": pl.Float64, "gap": pl.Float64})
