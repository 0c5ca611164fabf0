"""How good a model is: held-out loss, exact-match accuracy on evaluation sets, verbatim outcomes."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import polars as pl
import torch
import torch.nn.functional as F
from tqdm import tqdm

from neagari.evaluation.heldout import classify


@torch.inference_mode()
def heldout_nll(engine, texts: Sequence[str], batch_size: int = 16, max_len: int | None = None) -> tuple[float, int]:
    """(mean next-token negative log-likelihood in nats, number of predicted tokens)."""
    seqs = [engine.tokenizer.encode(t)[: max_len or engine.cfg.context_length] for t in texts]
    seqs = [s for s in seqs if len(s) >= 2]
    total, count = 0.0, 0
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        for ids, lg in zip(chunk, engine.logits(chunk, last_only=False, batch_size=batch_size)):
            target = torch.tensor(ids[1:])
            total += float(F.cross_entropy(lg[:-1], target, reduction="sum"))
            count += len(ids) - 1
    return total / count, count


def greedy_answers(engine, prompts: Sequence[str], stops: Sequence[str], max_new_tokens: int,
                   batch_size: int = 32, desc: str | None = None) -> list[str]:
    """Greedy completions, each cut at its stop string (end-of-turn tokens stop generation)."""
    tok = engine.tokenizer
    # sort by length so each batch pads little; restore order at the end
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=desc is None, leave=False):
        idx = order[s : s + batch_size]
        gens = engine.generate([tok.encode(prompts[i]) for i in idx], max_new_tokens=max_new_tokens)
        for i, g in zip(idx, gens):
            text = tok.decode(g)
            stop = stops[i]
            if stop and stop in text:
                text = text[: text.index(stop)]
            out[i] = text
    return out


def evaluate_items(engine, items: Sequence[dict], batch_size: int = 32, desc: str | None = None) -> pl.DataFrame:
    """Exact-match evaluation; items have id, domain, category, prompt, answer, stop."""
    tok = engine.tokenizer
    budget = max(len(tok.encode(it["answer"])) for it in items) + 4
    outputs = greedy_answers(engine, [it["prompt"] for it in items], [it.get("stop", "") for it in items],
                             budget, batch_size, desc)
    return pl.DataFrame({
        "id": [it["id"] for it in items],
        "domain": [it["domain"] for it in items],
        "category": [str(it.get("category", "")) for it in items],
        "answer": [it["answer"] for it in items],
        "output": outputs,
        "correct": [o.strip() == it["answer"].strip() for o, it in zip(outputs, items)],
    })


def verbatim_outcomes(engine, probes: Sequence[dict], max_new_tokens: int = 80, batch_size: int = 20,
                      desc: str | None = None) -> pl.DataFrame:
    """Held-out verbatim probes through the chat template (thinking off), classified."""
    tok = engine.tokenizer
    prompts = [tok.apply_chat_template([{"role": "system", "content": p["system"]},
                                        {"role": "user", "content": p["prompt"]}],
                                       add_generation_prompt=True, enable_thinking=False) for p in probes]
    outputs = greedy_answers(engine, prompts, [""] * len(prompts), max_new_tokens, batch_size, desc)
    return pl.DataFrame({
        "name": [p["name"] for p in probes],
        "domain": [p["domain"] for p in probes],
        "output": outputs,
        "outcome": [classify(o, p["target_span"], p["passage"]) for o, p in zip(outputs, probes)],
    })


def drill_pieces(text: str) -> list[str]:
    """A copy drill "{cue}: {line}\n{cue}: {line}\n" cut at pre-token boundaries into
    [cue, " line", "\ncue", " line", "\n"], so that encoding the pieces apart gives the tokens of
    the whole text and the two lists' token ranges are known exactly."""
    first, second = text.rstrip("\n").split("\n")
    cue1, line = first.split(": ", 1)
    cue2, line2 = second.split(": ", 1)
    if line2 != line:
        raise ValueError(f"not a copy drill: {text!r}")
    return [cue1 + ":", " " + line, "\n" + cue2 + ":", " " + line, "\n"]


@torch.inference_mode()
def copy_diagnostic(engine, texts: Sequence[str], batch_size: int = 32) -> dict:
    """Does the model copy from its context? Mean next-token NLL (nats) over the tokens of a word
    list's first occurrence and over the same tokens when the list is repeated (copy drills, see
    `neagari.embedded.toydata.copying`). A model with a copy (induction) circuit predicts the repetition
    far better than the first list; one without predicts both alike."""
    tok = engine.tokenizer
    seqs, spans = [], []
    for text in texts:
        pieces = [tok.encode(p) for p in drill_pieces(text)]
        starts = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
        seqs.append([t for p in pieces for t in p])
        spans.append(((starts[1], starts[2]), (starts[3], starts[4])))
    sums, counts = [0.0, 0.0], [0, 0]
    for ids, lg, sp in zip(seqs, engine.logits(seqs, last_only=False, batch_size=batch_size), spans):
        nll = F.cross_entropy(lg[:-1], torch.tensor(ids[1:]), reduction="none")  # nll[i] predicts ids[i + 1]
        for k, (a, b) in enumerate(sp):
            sums[k] += float(nll[a - 1 : b - 1].sum())
            counts[k] += b - a
    return {"lists": len(texts), "first_tokens": counts[0], "repeat_tokens": counts[1],
            "first_nll": sums[0] / counts[0], "repeat_nll": sums[1] / counts[1]}


def uniform_nll(vocab_size: int) -> float:
    return math.log(vocab_size)


_OPTION = re.compile(r"(?:^|\s)([A-Z])\) ")


def chance_of(item: dict) -> float:
    """Exact-match chance of a blind guesser on one evaluation item: 1 / (number of lettered
    options) for a multiple-choice prompt ("A) ... B) ... C) ..."), 0 for a free-form answer (a
    fixed string of several tokens is practically never guessed)."""
    options = _OPTION.findall(item["prompt"].rsplit("\n", 2)[-2] if "\n" in item["prompt"] else "")
    return 1 / len(options) if len(options) >= 2 else 0.0


@dataclass(frozen=True)
class Bars:
    """What the embedded model must show for the paper's experiments to mean anything on it.

    - held-out loss below that of a uniform model over the vocabulary;
    - exact match at least `margin` above chance on every probed domain and the controls (the
      paper's models solve a share of each task);
    - a wrong-target share inside `band` on every search domain (the search needs wrong targets to
      fix, and right ones to keep: PAPER.md §6.5 selects 20-60%);
    - at least `min_pass` PASS and `min_copy` COPY outcomes on held-out verbatim at baseline (the
      COPY->PASS conversion of §6.8 needs both);
    - a copy circuit: repetition NLL below `max_repeat_nll` while the first occurrence stays above
      `min_first_nll` (the copy tasks read their answers from the context).
    """

    margin: float = 0.10
    band: tuple[float, float] = (0.2, 0.6)
    min_pass: int = 10
    min_copy: int = 10
    max_repeat_nll: float = 0.5
    min_first_nll: float = 2.0


BAR_DOMAINS = ("editing", "instruction", "tool_calling", "math", "coding")


def quality_bars(summary: pl.DataFrame, outcomes: dict[str, int], copying: dict, bars: Bars = Bars()) -> list[dict]:
    """One row per requirement of `Bars` for one model: what was measured, the bar, and whether it
    is met. `summary` is the model's QualitySummary rows (with eval_chance), `outcomes` the held-out
    verbatim outcome counts, `copying` its copy-diagnostic row."""
    rows = []

    def add(requirement, subject, measured, bar, met):
        rows.append({"requirement": requirement, "subject": subject, "measured": measured, "bar": bar,
                     "met": bool(met)})

    first = summary.row(0, named=True)
    add("held-out loss", "held-out corpus", f"{first['heldout_nll']:.3f} nats/token",
        f"< {first['uniform_nll']:.3f} (uniform)", first["heldout_nll"] < first["uniform_nll"])
    by_domain = {r["domain"]: r for r in summary.iter_rows(named=True)}
    for domain in BAR_DOMAINS + ("controls",):
        r = by_domain.get(domain)
        acc, chance = (None, 0.0) if r is None else (r["eval_accuracy"], r["eval_chance"] or 0.0)
        add("exact match above chance", domain, "missing" if acc is None else f"{100 * acc:.1f}%",
            f">= {100 * (chance + bars.margin):.1f}% (chance {100 * chance:.1f}% + {100 * bars.margin:.0f} pp)",
            acc is not None and acc >= chance + bars.margin)
    lo, hi = bars.band
    for domain in BAR_DOMAINS:
        share = by_domain.get(domain, {}).get("probes_wrong_share")
        add("wrong-target share in band", domain, "missing" if share is None else f"{100 * share:.0f}%",
            f"{100 * lo:.0f}-{100 * hi:.0f}%", share is not None and lo <= share <= hi)
    for outcome, need in (("PASS", bars.min_pass), ("COPY", bars.min_copy)):
        n = outcomes.get(outcome, 0)
        add("held-out verbatim outcomes", outcome, str(n), f">= {need}", n >= need)
    add("copy circuit", "word-list repetition", f"{copying['repeat_nll']:.2f} nats/token",
        f"< {bars.max_repeat_nll}", copying["repeat_nll"] < bars.max_repeat_nll)
    add("copy circuit", "word-list first occurrence", f"{copying['first_nll']:.2f} nats/token",
        f"> {bars.min_first_nll}", copying["first_nll"] > bars.min_first_nll)
    return rows
