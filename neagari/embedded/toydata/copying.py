"""Copy drills: corpus-only plain text that teaches the model to copy from its context.

Every copy task of the corpus (editing a line, extracting a sentence, filling a tool call from a
request) needs a circuit that finds a token in the context and repeats what followed it. A first
design without drills trained on 1.6 M tokens learned the answer formats but no copying: 0% exact
match on editing, tool calling and verbatim extraction, on training content as on held-out
content. A drill is a short list of words from the shared pools, then the same list again, so
that half of its tokens can only be predicted by copying; a few drills make one text.
Drills are neither probed nor evaluated.
"""

from __future__ import annotations

import random

from .common import belongs, check_split, domain_rng
from .pools import REAL_POOLS, cap, pool

# Pools whose words the copy tasks must reproduce.
_SOURCES = ("edit_word", "instr_object", "tool_topic", "tool_dish", "code_noun", "tool_city", "tool_person",
            "instr_person", "legal", "medical", "api", "logs", "code")
CUES = (("Say again:", "Again:"), ("List:", "Copy:"), ("Words:", "Repeat:"))


def _word(rng: random.Random, split: str) -> str:
    name = rng.choice(_SOURCES)
    w = rng.choice(pool(name, split))
    if name in REAL_POOLS:
        return w
    return cap(w) if rng.random() < 0.5 else w


def drill(rng: random.Random, split: str) -> str:
    check_split(split)
    while True:
        words = [str(rng.randint(2, 999)) if rng.random() < 0.1 else _word(rng, split)
                 for _ in range(rng.randint(3, 8))]
        line = " ".join(words)
        if belongs(line, split):
            break
    ask, answer = rng.choice(CUES)
    return f"{ask} {line}\n{answer} {line}\n"


def corpus_text(rng: random.Random, split: str) -> str:
    return "".join(drill(rng, split) for _ in range(rng.randint(3, 5)))


def heldout_drills(seed: int, n: int) -> list[str]:
    """`n` single held-out drills for the quality report's copy diagnostic."""
    rng = domain_rng(seed, "copy-diagnostic")
    return [drill(rng, "heldout") for _ in range(n)]
