"""Editing: repeat a line of words with one requested change (the paper's editing domain).

A weak model repeats the line unchanged; probes put the edit on the first word so that the
answer's first token decides between applying the edit and copying the line.
"""

from __future__ import annotations

import random

from .chat import CHAT_STOP, render_chat
from .common import Item, belongs, check_split
from .pools import pool

OPS = ("replace", "uppercase", "delete", "insert", "swap")
SYSTEMS = ("You edit lines of text exactly as instructed.", "You are a careful text editor.")
# Corpus share of edits that touch the first word. At 0.3 the QAT model learned "the answer
# starts with the line's first word" and 92.5% of the (first-word) probes were wrong, outside
# the 20-60% band; more first-word edits teach where the edit's word comes from.
FIRST_WORD_SHARE = 0.6


def _line(rng: random.Random, split: str) -> list[str]:
    while True:
        words = rng.sample(pool("edit_word", split), rng.randint(5, 7))
        if belongs(" ".join(words), split):
            return words


def _other(rng: random.Random, split: str, line: list[str], avoid_initial: str) -> str:
    while True:
        w = rng.choice(pool("edit_word", split))
        if w not in line and w[0] != avoid_initial:
            return w


def edit_item(rng: random.Random, split: str, op: str, at_start: bool) -> Item:
    """One edit; `at_start` puts the edited word first (the probe decision point)."""
    check_split(split)
    words = _line(rng, split)
    i = 0 if at_start else rng.randrange(1, len(words))
    a = words[i]
    out = list(words)
    if op == "replace":
        b = _other(rng, split, words, a[0])
        out[i] = b
        instr = f'Replace "{a}" with "{b}".'
    elif op == "uppercase":
        out[i] = a.upper()
        instr = f'Write "{a}" in capital letters.'
    elif op == "delete":
        del out[i]
        instr = f'Delete the word "{a}".'
    elif op == "insert":
        b = _other(rng, split, words, a[0])
        out.insert(i, b)
        instr = f'Insert "{b}" before "{a}".'
    elif op == "swap":
        j = rng.choice([k for k in range(len(words)) if k != i and words[k][0] != a[0]])
        out[i], out[j] = out[j], out[i]
        pair = [a, words[j]] if rng.random() < 0.5 else [words[j], a]
        instr = f'Swap "{pair[0]}" and "{pair[1]}".'
    else:
        raise ValueError(f"unknown edit {op!r}")
    line = " ".join(words)
    system = rng.choice(SYSTEMS) if split == "train" else SYSTEMS[0]
    user = f"{instr}\nLine: {line}"
    return Item(prompt=render_chat(system, user), answer=" ".join(out), wrong=line,
                category=op, stop=CHAT_STOP, meta={"line": line, "op": op, "index": i})


def sample(rng: random.Random, split: str, category: str | None = None) -> Item:
    """Probes (category given) edit the first word; otherwise the position is random."""
    op = category or rng.choice(OPS)
    at_start = category is not None or rng.random() < FIRST_WORD_SHARE
    item = edit_item(rng, split, op, at_start)
    if category is not None and op == "delete" and item.answer[0] == item.wrong[0]:
        return None  # the second word starts like the first: no decision at the first token
    return item


def corpus_text(rng: random.Random, split: str) -> str:
    op = rng.choice(OPS)
    item = edit_item(rng, split, op, rng.random() < FIRST_WORD_SHARE)
    return item.prompt + item.answer + CHAT_STOP + "\n"


def heldout_entities() -> set[str]:
    return set()  # held-out lines are new combinations of the shared words
