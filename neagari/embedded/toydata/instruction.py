"""Instruction following: answer a story question in a requested format (IFEval analogue).

A story states three facts about three objects (a colour, a place or a material each); the
question asks about one of them and the instruction sets the answer's format. Two things can go
wrong, and the probe categories test each one:

- the format (``uppercase``, ``one_word``, ``sentence``, ``start_with``, ``quotes`` and the nested
  ``quoted_uppercase``): the wrong answer is the right fact in another format; every format opens
  the answer differently (GREEN / green / The ... / Okay, ... / "green" / "GREEN"), so the first
  token shows whether the instruction was followed;
- the fact (``*_distractor``): the wrong answer is a distractor fact of the same kind in the right
  format, so the first token shows whether the question was bound to the right object.

Why three facts: with one fact per story the embedded model, once it copies from its context,
followed the format on nearly every probe (0% wrong at 21 M training tokens), which leaves the
search nothing to fix; distractors of the question's own kind make the answer a selection among
copies, not a copy.
"""

from __future__ import annotations

import random

from .chat import CHAT_STOP, render_chat
from .common import Item, belongs, check_split
from .pools import cap, pool

COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown",
          "grey", "pink")
PLACES = ("garage", "kitchen", "attic", "cellar", "garden", "office", "hallway", "shed",
          "basement", "bedroom", "closet", "porch")
MATERIALS = ("wood", "glass", "steel", "paper", "stone", "wool", "clay", "leather", "plastic",
             "rubber", "linen", "bronze")
VALUES = {"color": COLORS, "place": PLACES, "material": MATERIALS}
OPENERS = ("Sure", "Okay", "Indeed", "Well", "Yes")
FORMATS = ("uppercase", "one_word", "sentence", "start_with", "quotes", "quoted_uppercase")
# Formats whose answer starts with the value itself: only there can a distractor value be told
# apart from the right one by the first token.
DISTRACTOR_FORMATS = ("uppercase", "one_word")
CATEGORIES = FORMATS + tuple(f"{f}_distractor" for f in DISTRACTOR_FORMATS)
SYSTEMS = ("Follow the format instruction exactly.", "You are a helpful assistant.")
N_FACTS = 3


def fact_text(name: str, obj: str, kind: str, value: str) -> str:
    if kind == "color":
        return f"{name} has a {value} {obj}."
    if kind == "place":
        return f"{name} keeps the {obj} in the {value}."
    return f"{name} made a {obj} out of {value}."


def question_text(obj: str, kind: str) -> str:
    return {"color": f"What color is the {obj}?", "place": f"Where is the {obj}?",
            "material": f"What is the {obj} made of?"}[kind]


def sentence_text(obj: str, kind: str, value: str) -> str:
    return {"color": f"the {obj} is {value}.", "place": f"the {obj} is in the {value}.",
            "material": f"the {obj} is made of {value}."}[kind]


def _story(rng: random.Random, split: str):
    """(story, question, value, sentence answer, distractor value); the story belongs to `split`."""
    while True:
        out = _any_story(rng, split)
        if belongs(out[0], split):
            return out


def _any_story(rng: random.Random, split: str):
    """Three facts on three distinct objects by distinct people. The asked fact's kind recurs
    in one distractor, whose value starts with another letter (so a probe on it is decidable)."""
    names = [cap(n) for n in rng.sample(pool("instr_person", split), N_FACTS)]
    objs = rng.sample(pool("instr_object", split), N_FACTS)
    kind = rng.choice(sorted(VALUES))
    value = rng.choice(VALUES[kind])
    distractor = rng.choice([v for v in VALUES[kind] if v[0] != value[0]])
    third_kind = rng.choice(sorted(VALUES))
    third = rng.choice([v for v in VALUES[third_kind] if v not in (value, distractor)])
    facts = [(names[0], objs[0], kind, value), (names[1], objs[1], kind, distractor),
             (names[2], objs[2], third_kind, third)]
    rng.shuffle(facts)
    story = " ".join(fact_text(*f) for f in facts)
    return story, question_text(objs[0], kind), value, sentence_text(objs[0], kind, value), distractor


def format_item(rng: random.Random, split: str, category: str) -> Item:
    check_split(split)
    fmt = category.removesuffix("_distractor")
    distract = category.endswith("_distractor")
    story, question, value, sentence, distractor = _story(rng, split)
    if fmt == "uppercase":
        instr, answer, wrong = "Answer in uppercase letters.", value.upper(), value
        if distract:
            wrong = distractor.upper()
    elif fmt == "one_word":
        instr, answer, wrong = "Answer with exactly one word.", value, cap(sentence)
        if distract:
            wrong = distractor
    elif fmt == "sentence":
        instr, answer, wrong = "Answer in a full sentence.", cap(sentence), value
    elif fmt == "start_with":
        opener = rng.choice(OPENERS)
        instr = f"Start your answer with the word {opener}."
        answer, wrong = f"{opener}, {sentence}", cap(sentence)
    elif fmt == "quotes":
        instr, answer, wrong = "Put your one-word answer in double quotes.", f'"{value}"', value
    elif fmt == "quoted_uppercase":
        instr = "Answer with one word in uppercase letters, in double quotes."
        answer, wrong = f'"{value.upper()}"', value.upper()
    else:
        raise ValueError(f"unknown instruction category {category!r}")
    if distract and fmt not in DISTRACTOR_FORMATS:
        raise ValueError(f"unknown instruction category {category!r}")
    system = rng.choice(SYSTEMS) if split == "train" else SYSTEMS[0]
    user = f"{story} {question} {instr}"
    return Item(prompt=render_chat(system, user), answer=answer, wrong=wrong, category=category,
                stop=CHAT_STOP, meta={"value": value, "distractor": distractor})


def sample(rng: random.Random, split: str, category: str | None = None) -> Item:
    return format_item(rng, split, category or rng.choice(FORMATS))


def corpus_text(rng: random.Random, split: str) -> str:
    item = sample(rng, split)
    return item.prompt + item.answer + CHAT_STOP + "\n"


def heldout_entities() -> set[str]:
    return set()  # held-out stories are new combinations of the shared names and objects
