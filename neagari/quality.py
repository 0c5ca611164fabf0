"""How good a model is: held-out loss, exact-match accuracy on evaluation sets, verbatim outcomes."""

from __future__ import annotations

import math
from typing import Sequence

import polars as pl
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .heldout import classify


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


def uniform_nll(vocab_size: int) -> float:
    return math.log(vocab_size)
