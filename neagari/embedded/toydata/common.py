"""Shared pieces of the toy task generators: the task item, the probe record and split helpers."""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass, field

SPLITS = ("train", "heldout")
PROBE_VERSION = "toy-1.0"
PLAIN_STOP = "\n"

# llama.cpp's Qwen2 pre-tokenizer split (used by our byte-level BPE), for ASCII text: \p{L} and
# \p{N} become [A-Za-z] and [0-9]; all generated text is ASCII (checked in tests). BPE never merges
# across these pieces, so the first token of an answer lies inside its first piece.
_QWEN2_ASCII = re.compile(
    r"'(?:[sStTmMdD]|[rR][eE]|[vV][eE]|[lL][lL])|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]"
    r"| ?[^\sA-Za-z0-9]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class Item:
    """One task instance: `prompt + answer` is the text a model should produce.

    `wrong` is a plausible wrong answer whose first unit differs from the answer's (the probe's
    heuristic wrong token before calibration); `stop` ends greedy generation when scoring.
    """

    prompt: str
    answer: str
    wrong: str
    category: str
    stop: str
    meta: dict = field(default_factory=dict)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def domain_rng(seed: int, *tags: str) -> random.Random:
    """An independent, reproducible stream per (seed, purpose); string seeds hash stably."""
    return random.Random(":".join([str(seed), *tags]))


def belongs(key: str, split: str) -> bool:
    """Whether a combination (a line, a passage, a request, a problem) belongs to `split`, for
    good (a stable hash of its text); generators draw until it does, so no held-out combination
    can occur in training text."""
    return (zlib.crc32(key.encode("utf-8")) % 2 == 1) == (split == "heldout")


def first_pretoken(text: str) -> str:
    """The first Qwen2 pre-token of `text` (" Menth", "9", "):\n", "get").

    A probe's correct/wrong string is this piece of the answer as it stands in context, so that
    tokenizing it alone gives the same first token as the full text does (":" alone would not:
    in the corpus the colon ending a def line is part of the piece "):\n").
    """
    m = _QWEN2_ASCII.match(text)
    if not m:
        raise ValueError(f"no pre-token at the start of {text!r}")
    return m.group(0)


def decisions_differ(correct: str, wrong: str) -> bool:
    """True when two continuations differ in their first non-space character, so that their
    first tokens differ under any byte-level BPE (leading spaces may differ: ":" vs " and")."""
    c, w = correct.lstrip(), wrong.lstrip()
    return bool(c) and bool(w) and c[0] != w[0]


def decision_pieces(item: Item) -> tuple[str, str]:
    """(correct, wrong): the first pre-tokens of the answer and of the wrong answer in context.

    In plain text the stop newline follows the answer and can join a final punctuation piece;
    in chat text `<|im_end|>` follows, a special token that never joins.
    """
    tail = item.stop if item.stop == PLAIN_STOP else ""
    return first_pretoken(item.answer + tail), first_pretoken(item.wrong + tail)


def make_probe(item: Item, name: str) -> dict:
    """Upstream probe record: the prompt ends exactly where the answer begins."""
    correct, wrong = decision_pieces(item)
    if not decisions_differ(correct, wrong):
        raise ValueError(f"probe {name}: {correct!r} and {wrong!r} do not differ at the start")
    return {
        "prompt": item.prompt,
        "correct": correct,
        "wrong": wrong,
        "name": name,
        "category": item.category,
        "source": "toy",
    }


def collect_probes(sample, rng: random.Random, domain: str, n: int, categories: list[str]) -> list[dict]:
    """Draw `n` probes with distinct prompts, cycling through `categories` for balance.

    `sample(rng, split, category)` returns an Item or None (when no valid probe came out).
    """
    probes, seen = [], set()
    counts = {c: 0 for c in categories}
    attempts = 0
    while len(probes) < n:
        attempts += 1
        if attempts > 200 * n:
            raise RuntimeError(f"{domain}: could not draw {n} distinct probes")
        cat = categories[len(probes) % len(categories)]
        item = sample(rng, "heldout", cat)
        if item is None or item.prompt in seen:
            continue
        if not decisions_differ(*decision_pieces(item)):
            continue
        seen.add(item.prompt)
        probes.append(make_probe(item, f"{domain}_{cat}_{counts[cat]:02d}"))
        counts[cat] += 1
    return probes


def probe_set(domain: str, seed: int, targets: list[dict], controls: list[dict] = (),
              search_config: dict | None = None, **source) -> dict:
    """The upstream probe-file layout."""
    return {
        "domain": domain,
        "version": PROBE_VERSION,
        "source": {"generator": "neagari.embedded.toydata", "seed": seed, "split": "heldout", **source},
        "search_config": dict(search_config or {}),
        "probes": {"target": list(targets), "control": list(controls)},
    }


def eval_records(items: list[Item], domain: str) -> list[dict]:
    return [
        {"id": f"{domain}_{i:04d}", "prompt": it.prompt, "answer": it.answer, "domain": domain,
         "stop": it.stop, "category": it.category}
        for i, it in enumerate(items)
    ]


def distinct_items(sample, rng: random.Random, split: str, n: int) -> list[Item]:
    """`n` items with pairwise distinct prompts, from `sample(rng, split, None)`."""
    out, seen = [], set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n:
            raise RuntimeError(f"could not draw {n} distinct items")
        item = sample(rng, split, None)
        if item is None or item.prompt in seen:
            continue
        seen.add(item.prompt)
        out.append(item)
    return out
