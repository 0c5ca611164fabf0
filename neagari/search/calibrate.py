"""Probe calibration (PAPER.md §3): once, on the base model, the heuristic wrong token is replaced
by the model's actual top prediction that is not the correct token.

As upstream does by default:

- A probe's tokens are the first tokens of its answers. Under a Qwen-style split a leading space
  is a token of its own before a digit, so " 4" and " 5" share their first token (math_basic, gap 0
  whatever the weights) and " 250" is scored as a bare space (upstream's GSM8K targets all have
  ``base_correct_id`` 220). :func:`token_report` lists such probes; ``first_token="differing"``
  moves the answers' shared leading tokens (and a leading whitespace token of the correct answer)
  into the prompt, so that the gap compares the first tokens where the answers differ.
- Upstream's three base controls (``DEFAULT_CONTROL_PROBES``) are never calibrated: scored at the
  first tokens of their own texts. ``upstream_controls="calibrate"`` calibrates them like any probe.
- A probe with an ``answer_prefix`` (the 1.7B demo notebook's knowledge controls) passes, as the
  notebook checks it, when the top token's stripped text and the prefix are prefixes one of the
  other (' Jupiter' and ' J' both give 'Jup'). Its correct token is the best such token on the base
  model and its wrong token the best other one, so the gap is positive exactly when the notebook's
  check passes there; the search then scores that fixed pair, as it does every probe.
"""

from __future__ import annotations

import copy
from typing import Sequence

import polars as pl
import torch

from neagari.search.probes import Probe, encode_probes, probe_from_dict, probe_groups, top_rival

UPSTREAM_BASE_SOURCE = "upstream:DEFAULT_CONTROL_PROBES"  # neagari.evaluation.datasets tags them so
UPSTREAM_CONTROL_MODES = ("keep", "calibrate")
FIRST_TOKEN_MODES = ("upstream", "differing")
_STORED = ("base_correct_id", "base_wrong_id", "base_gap", "heuristic_wrong")


def _restore(d: dict) -> None:
    """Undo an earlier calibration in place: recalibration starts from the texts as written and the
    heuristic wrong token, never from an earlier run's result."""
    before = d.pop("uncorrected", None)
    if before:
        d.update(before)
    elif "heuristic_wrong" in d:
        d["wrong"] = d["heuristic_wrong"]
    for k in _STORED:
        d.pop(k, None)


def _is_space(tokenizer, token: int) -> bool:
    piece = tokenizer.decode([token])
    return piece != "" and piece.strip() == ""


def move_shared_prefix(d: dict, tokenizer) -> bool:
    """Move the answers' shared leading tokens, and a leading whitespace token of the correct answer,
    into the prompt (in place; the texts as written go to ``uncorrected``). False, and ``d``
    unchanged, when there is nothing to move or it cannot be moved exactly: the correct answer would
    be left without a token, the tokens do not decode to a prefix of its text, or the prompt plus
    that text would not tokenize as the prompt's tokens plus the moved ones (the model would then
    be asked to continue a context it never produces)."""
    c, w = tokenizer.encode(d["correct"]), tokenizer.encode(d["wrong"])
    k = 0
    while k < min(len(c), len(w)) and c[k] == w[k]:
        k += 1
    while k < len(c) - 1 and _is_space(tokenizer, c[k]):
        k += 1
    if k == 0 or k >= len(c):
        return False
    moved = tokenizer.decode(c[:k])
    if not d["correct"].startswith(moved):
        return False
    prompt = d["prompt"] + moved
    if tokenizer.encode(prompt) != tokenizer.encode(d["prompt"]) + c[:k]:
        return False
    wrong = d["wrong"][len(moved):] if d["wrong"].startswith(moved) else d["wrong"]
    if not wrong:
        return False
    d["uncorrected"] = {"prompt": d["prompt"], "correct": d["correct"], "wrong": d["wrong"]}
    d.update(prompt=prompt, correct=d["correct"][len(moved):], wrong=wrong)
    return True


def prefix_compatible(tokenizer, prefix: str) -> torch.Tensor:
    """Mask (V,) of the tokens whose stripped text and ``prefix`` are prefixes one of the other, the
    notebook's pass rule. A whitespace-only token is among them, as in the notebook ('' is a prefix
    of every text)."""
    pieces = (tokenizer.decode([i]).strip() for i in range(len(tokenizer.tokens)))
    return torch.tensor([p.startswith(prefix) or prefix.startswith(p) for p in pieces])


def _prefix_pair(row: torch.Tensor, compatible: torch.Tensor) -> tuple[int, int]:
    """(best compatible, best other) token of one logit row."""
    return int(row.masked_fill(~compatible, float("-inf")).argmax()), \
        int(row.masked_fill(compatible, float("-inf")).argmax())


def calibrate_document(engine, doc: dict, batch_size: int = 64, upstream_controls: str = "keep",
                       first_token: str = "upstream") -> dict:
    """A calibrated copy of an upstream probe document.

    Every probe gains ``base_correct_id``, ``base_wrong_id``, ``base_gap`` (and ``wrong`` becomes
    the calibrated token's text; the heuristic one is kept as ``heuristic_wrong``). Each group is
    sorted by gap, most wrong first, as upstream's calibrated files are.

    ``upstream_controls``: ``keep`` (upstream's) leaves upstream's base controls as written, with
    only ``base_gap`` (at their texts' first tokens) added; ``calibrate`` treats them as any probe.
    ``first_token``: ``upstream`` scores the answers' first tokens; ``differing`` first applies
    :func:`move_shared_prefix` to every probe. Probes with an ``answer_prefix`` are scored at the
    best token the prefix accepts (module docstring).
    """
    if upstream_controls not in UPSTREAM_CONTROL_MODES:
        raise ValueError(f"upstream_controls must be one of {', '.join(UPSTREAM_CONTROL_MODES)}, "
                         f"got {upstream_controls!r}")
    if first_token not in FIRST_TOKEN_MODES:
        raise ValueError(f"first_token must be one of {', '.join(FIRST_TOKEN_MODES)}, got {first_token!r}")
    out = copy.deepcopy(doc)
    groups = probe_groups(out, "probe document")
    flat: list[tuple[str, int, bool, Probe]] = []
    moved = 0
    for role, items in groups.items():
        for i, d in enumerate(items):
            where = f"probes.{role}[{i}]"
            if not isinstance(d, dict):  # probe_from_dict says what is wrong with it
                probe_from_dict(d, role, where, distinct=False)
            _restore(d)
            # validated before it is tokenized (a prompt of 1.5 is an error, not a crash)
            probe_from_dict(d, role, where, distinct=False)
            if first_token == "differing":
                moved += move_shared_prefix(d, engine.tokenizer)
            kept = upstream_controls == "keep" and d.get("source") == UPSTREAM_BASE_SOURCE
            flat.append((role, i, kept, probe_from_dict(d, role, where, distinct=False)))
    encoded = encode_probes(engine, [p for *_, p in flat], distinct=False)
    logits = torch.stack(engine.logits([e[0] for e in encoded], batch_size=batch_size))
    correct = torch.tensor([e[1] for e in encoded])
    wrong = top_rival(logits, correct)
    masks: dict[str, torch.Tensor] = {}
    prefixed = []
    for j, (role, i, kept, p) in enumerate(flat):
        if kept:  # scored at its own wrong text's first token, as upstream scores it
            wrong[j] = encoded[j][2]
        prefix = groups[role][i].get("answer_prefix")
        if isinstance(prefix, str) and prefix and not kept:
            if prefix not in masks:
                masks[prefix] = prefix_compatible(engine.tokenizer, prefix)
            correct[j], wrong[j] = _prefix_pair(logits[j], masks[prefix])
            prefixed.append(p.name)
    rows = torch.arange(len(flat))
    gaps = (logits[rows, correct] - logits[rows, wrong]).tolist()
    failures = 0
    for (role, i, kept, _p), c, w, gap in zip(flat, correct.tolist(), wrong.tolist(), gaps):
        d = groups[role][i]
        if kept:
            d["base_gap"] = gap
        else:
            d.setdefault("heuristic_wrong", d["wrong"])
            d.update(wrong=engine.tokenizer.decode([w]), base_correct_id=c, base_wrong_id=w, base_gap=gap)
        failures += gap <= 0
    for role in groups:
        groups[role].sort(key=lambda d: d["base_gap"])
    out["probes"] = groups
    out["_uncalibrated"] = False
    out["_calibration"] = {"source_probes": len(flat), "valid_probes": len(flat), "base_failures": failures,
                           "base_corrects": len(flat) - failures, "model_sha256": engine.gguf.sha256(),
                           "upstream_controls": upstream_controls,
                           "kept_uncalibrated": [p.name for *_, kept, p in flat if kept],
                           "first_token": first_token, "moved_to_prompt": moved,
                           "scored_by_answer_prefix": prefixed}
    return out


# ---------------------------------------------------------------------------- token report
def token_report(probes: Sequence[Probe], tokenizer, probe_set: str) -> pl.DataFrame:
    """One row per probe whose gap does not compare the answers themselves (schema
    neagari.search.schemas.ProbeTokenIssues):

    - ``same_first_token``: correct and wrong resolve to one token; the gap is 0 whatever the weights;
    - ``correct_whitespace`` / ``wrong_whitespace``: that answer's token is whitespace while the
      answer has more than whitespace; the gap then measures whether a space comes next.

    Ids are the stored ones (``base_correct_id``/``base_wrong_id``), else the texts' first tokens;
    ``tokenizer`` needs ``decode`` (and ``encode`` for probes without stored ids).
    """
    rows = []
    for p in probes:
        c = p.correct_id if p.correct_id is not None else tokenizer.encode(p.correct)[0]
        w = p.wrong_id if p.wrong_id is not None else tokenizer.encode(p.wrong)[0]
        cp, wp = tokenizer.decode([c]), tokenizer.decode([w])
        flags = {"same_first_token": c == w,
                 "correct_whitespace": cp.strip() == "" and p.correct.strip() != "",
                 "wrong_whitespace": wp.strip() == "" and p.wrong.strip() != ""}
        if any(flags.values()):
            rows.append({"probe_set": probe_set, "name": p.name, "role": p.role, "correct": p.correct,
                         "wrong": p.wrong, "correct_id": c, "wrong_id": w, "correct_token": cp, "wrong_token": wp,
                         "ids_stored": p.correct_id is not None and p.wrong_id is not None, **flags,
                         "base_gap": p.base_gap})
    schema = {"probe_set": pl.String, "name": pl.String, "role": pl.String, "correct": pl.String,
              "wrong": pl.String, "correct_id": pl.Int64, "wrong_id": pl.Int64, "correct_token": pl.String,
              "wrong_token": pl.String, "ids_stored": pl.Boolean, "same_first_token": pl.Boolean,
              "correct_whitespace": pl.Boolean, "wrong_whitespace": pl.Boolean, "base_gap": pl.Float64}
    return pl.DataFrame(rows, schema=schema)
