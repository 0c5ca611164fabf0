"""Controls: facts about invented entities and multiple-choice reasoning (the paper's general
knowledge, MMLU and MuSR controls).

The facts (capital of each invented country, colour of each invented thing) are fixed by the
world seed and stated many times, in ten phrasings each (statements and questions opening with
What, Which and Tell me), in the training text; the control probes ask about the same facts with
phrasings that never occur in training. A small model answers an unseen phrasing only once it has
seen the fact asked in several: with five phrasings (statements and one "What" question) the
shipped model answered 1 of 27 held-out colour questions. Reasoning items ("who is tallest",
"which number is largest") use held-out names and number triples; the training text also states
order chains with their conclusion ("so X is the tallest"), which the lettered questions then ask.
"""

from __future__ import annotations

import functools
import random

from .common import PLAIN_STOP, Item, belongs, check_split
from .pools import WORLD_SEED, cap, invented, pool

COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple")
LETTERS = ("A", "B", "C")

CAPITAL_PHRASES = {
    "train": ["The capital of {c} is {k}.", "{k} is the capital of {c}.",
              "{c} has its capital in {k}.", "Q: What is the capital of {c}?\nA: {k}",
              "Visitors to {c} usually arrive in {k}, its capital.",
              "The capital city of {c} is {k}.", "Q: What city is the capital of {c}?\nA: {k}",
              "Q: Tell me the capital of {c}.\nA: {k}",
              "Q: Which city does {c} call its capital?\nA: {k}",
              "Q: What is {c}'s capital?\nA: {k}"],
    "heldout": ["Q: Which city is the capital of {c}?\nA: {k}",
                "Q: Name the capital city of {c}.\nA: {k}"],
}
COLOR_PHRASES = {
    "train": ["The {t} is {col}.", "A {t} is always {col}.", "Q: What color is a {t}?\nA: {col}",
              "Every {t} you will ever see is {col}.", "People know the {t} by its {col} color.",
              "The color of the {t} is {col}.", "Q: What is the color of a {t}?\nA: {col}",
              "Q: Tell me the color of a {t}.\nA: {col}", "Q: Which color is a {t}?\nA: {col}",
              "Q: What color does a {t} come in?\nA: {col}"],
    "heldout": ["Q: Which color does a {t} have?\nA: {col}",
                "Q: Name the color of the {t}.\nA: {col}"],
}
FACT_MC = {
    "train": ("What is the capital of {c}?", "What color is a {t}?"),
    "heldout": ("Which city is the capital of {c}?", "Which color does a {t} have?"),
}
ORDER_RELATIONS = (("taller", "tallest", "shortest"), ("older", "oldest", "youngest"),
                   ("faster", "fastest", "slowest"))
PROBE_PLAN = ["capital"] * 10 + ["color"] * 6 + ["fact_mc"] * 7 + ["order_mc"] * 4 + \
    ["compare_mc"] * 3
CATEGORIES = ("capital", "color", "fact_mc", "order_mc", "compare_mc")


@functools.lru_cache(maxsize=1)
def facts() -> tuple[dict[str, str], dict[str, str]]:
    """(country -> capital, thing -> colour); fixed by the world seed, independent of any split."""
    rng = random.Random(WORLD_SEED + ":controls")
    capitals = dict(zip((cap(c) for c in invented("country")), (cap(k) for k in invented("capital"))))
    colors = {t: rng.choice(COLORS) for t in invented("thing")}
    return capitals, colors


def _split_text(text: str):
    """A fact statement 'Q: ...\\nA: X' or '... X.' -> (prompt, answer) around the fact."""
    head, _, ans = text.rpartition("\nA: ")
    return head + "\nA:", " " + ans


def _fact_item(rng: random.Random, split: str, kind: str, statement: bool = False) -> Item:
    """A fact as a question (prompt ends at "A:") or, with `statement`, any phrasing of `split`."""
    capitals, colors = facts()
    if kind == "capital":
        c = rng.choice(sorted(capitals))
        k = capitals[c]
        phrases = [p for p in CAPITAL_PHRASES[split] if statement or "\nA: " in p]
        text = rng.choice(phrases).format(c=c, k=k)
        wrong = rng.choice([v for v in capitals.values() if v[0] != k[0]])
    else:
        t = rng.choice(sorted(colors))
        col = colors[t]
        phrases = [p for p in COLOR_PHRASES[split] if statement or "\nA: " in p]
        text = rng.choice(phrases).format(t=t, col=col)
        wrong = rng.choice([v for v in COLORS if v[0] != col[0]])
    prompt, answer = _split_text(text) if "\nA: " in text else (text, "")
    return Item(prompt=prompt, answer=answer, wrong=" " + wrong, category=kind, stop=PLAIN_STOP,
                meta={"statement": text})


def _mc(question: str, options: list[str], correct: str, category: str) -> Item:
    body = " ".join(f"{letter}) {o}" for letter, o in zip(LETTERS, options))
    right = LETTERS[options.index(correct)]
    wrong = next(letter for letter in LETTERS if letter != right)
    return Item(prompt=f"Q: {question}\n{body}\nAnswer:", answer=f" {right}", wrong=f" {wrong}",
                category=category, stop=PLAIN_STOP)


def _mc_item(rng: random.Random, split: str, kind: str) -> Item:
    capitals, colors = facts()
    if kind == "fact_mc":
        if rng.random() < 0.5:
            c = rng.choice(sorted(capitals))
            opts = [capitals[c]] + rng.sample([v for v in capitals.values() if v != capitals[c]], 2)
            q, right = FACT_MC[split][0].format(c=c), capitals[c]
        else:
            t = rng.choice(sorted(colors))
            opts = [colors[t]] + rng.sample([v for v in COLORS if v != colors[t]], 2)
            q, right = FACT_MC[split][1].format(t=t), colors[t]
        rng.shuffle(opts)
        return _mc(q, opts, right, kind)
    if kind == "order_mc":
        p1, p2, p3 = (cap(n) for n in rng.sample(pool("ctrl_person", split), 3))
        rel, top, bottom = rng.choice(ORDER_RELATIONS)
        ask_top = rng.random() < 0.5
        q = f"{p1} is {rel} than {p2}. {p2} is {rel} than {p3}. Who is {top if ask_top else bottom}?"
        opts = [p1, p2, p3]
        rng.shuffle(opts)
        return _mc(q, opts, p1 if ask_top else p3, kind)
    if kind == "compare_mc":
        while True:
            opts = rng.sample(range(10, 100), 3)
            if belongs(",".join(map(str, sorted(opts))), split):
                break
        ask_max = rng.random() < 0.5
        q = f"Which number is {'largest' if ask_max else 'smallest'}?"
        return _mc(q, [str(o) for o in opts], str(max(opts) if ask_max else min(opts)), kind)
    raise ValueError(f"unknown control kind {kind!r}")


def sample(rng: random.Random, split: str, category: str | None = None) -> Item:
    check_split(split)
    kind = category or rng.choice(CATEGORIES)
    if kind in ("capital", "color"):
        return _fact_item(rng, split, kind)
    return _mc_item(rng, split, kind)


def _order_statement(rng: random.Random, split: str) -> str:
    """An order chain with its conclusion, the reasoning an order_mc question asks for."""
    p1, p2, p3 = (cap(n) for n in rng.sample(pool("ctrl_person", split), 3))
    rel, top, bottom = rng.choice(ORDER_RELATIONS)
    return (f"{p1} is {rel} than {p2}. {p2} is {rel} than {p3}. "
            f"So {p1} is the {top} and {p3} is the {bottom}.")


def corpus_text(rng: random.Random, split: str) -> str:
    """Four to six fact statements, an order chain with its conclusion, and one or two lettered
    questions (facts, order, numbers)."""
    check_split(split)
    parts = []
    for _ in range(rng.randint(4, 6)):
        item = _fact_item(rng, split, rng.choice(("capital", "color")), statement=True)
        parts.append(item.meta["statement"])
    parts.append(_order_statement(rng, split))
    for _ in range(rng.randint(1, 2)):
        item = _mc_item(rng, split, rng.choice(("fact_mc", "order_mc", "compare_mc")))
        parts.append(item.prompt + item.answer)
    return "\n".join(parts) + "\n"


def heldout_entities() -> set[str]:
    return {cap(n) for n in pool("ctrl_person", "heldout")}
