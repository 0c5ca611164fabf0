"""Probe calibration (PAPER.md §3): once, on the base model, the heuristic wrong token is replaced
by the model's actual top prediction that is not the correct token."""

from __future__ import annotations

import copy

import torch

from neagari.search.probes import Probe, encode_probes, probe_from_dict, probe_groups, top_rival


def calibrate_document(engine, doc: dict, batch_size: int = 64) -> dict:
    """A calibrated copy of an upstream probe document.

    Every probe gains ``base_correct_id``, ``base_wrong_id``, ``base_gap`` (and ``wrong`` becomes
    the calibrated token's text; the heuristic one is kept as ``heuristic_wrong``). Each group is
    sorted by gap, most wrong first, as upstream's calibrated files are.
    """
    out = copy.deepcopy(doc)
    groups = probe_groups(out, "probe document")
    flat: list[tuple[str, int, Probe]] = []
    for role, items in groups.items():
        for i, d in enumerate(items):
            # recalibration starts from the heuristic token, never from an earlier calibration
            d2 = {k: v for k, v in d.items() if k not in ("base_correct_id", "base_wrong_id", "base_gap")}
            if "heuristic_wrong" in d2:
                d2["wrong"] = d2["heuristic_wrong"]
            flat.append((role, i, probe_from_dict(d2, role, f"probes.{role}[{i}]", distinct=False)))
    encoded = encode_probes(engine, [p for _, _, p in flat], distinct=False)
    logits = torch.stack(engine.logits([e[0] for e in encoded], batch_size=batch_size))
    correct = torch.tensor([e[1] for e in encoded])
    wrong = top_rival(logits, correct)
    rows = torch.arange(len(flat))
    gaps = (logits[rows, correct] - logits[rows, wrong]).tolist()
    failures = 0
    for (role, i, p), c, w, gap in zip(flat, correct.tolist(), wrong.tolist(), gaps):
        d = groups[role][i]
        d.setdefault("heuristic_wrong", d["wrong"])
        d.update(wrong=engine.tokenizer.decode([w]), base_correct_id=c, base_wrong_id=w, base_gap=gap)
        failures += gap <= 0
    for role in groups:
        groups[role].sort(key=lambda d: d["base_gap"])
    out["probes"] = groups
    out["_uncalibrated"] = False
    out["_calibration"] = {"source_probes": len(flat), "valid_probes": len(flat), "base_failures": failures,
                           "base_corrects": len(flat) - failures, "model_sha256": engine.gguf.sha256()}
    return out
