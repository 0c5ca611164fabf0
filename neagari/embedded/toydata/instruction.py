"""Instruction following: answer a one-line story question in a requested format (IFEval analogue).

Each format opens the answer differently (GREEN / green / The ... / Okay, ... / "green"), so the
first token of the answer shows whether the format instruction was followed.
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
OPENERS = ("Sure", "Okay", "Indeed", "Well", "Yes")
FORMATS = ("uppercase", "one_word", "sentence", "start_with", "quotes")
SYSTEMS = ("Follow the format instruction exactly.", "You are a helpful assistant.")


def _story(rng: random.Random, split: str):
    """(story, question, value, sentence answer); the story belongs to `split`."""
    while True:
        out = _any_story(rng, split)
        if belongs(out[0], split):
            return out


def _any_story(rng: random.Random, split: str):
    name = cap(rng.choice(pool("instr_person", split)))
    obj = rng.choice(pool("instr_object", split))
    kind = rng.choice(("color", "place", "material"))
    if kind == "color":
        v = rng.choice(COLORS)
        return (f"{name} has a {v} {obj}.", f"What color is the {obj}?", v,
                f"the {obj} is {v}.")
    if kind == "place":
        v = rng.choice(PLACES)
        return (f"{name} keeps the {obj} in the {v}.", f"Where is the {obj}?", v,
                f"the {obj} is in the {v}.")
    v = rng.choice(MATERIALS)
    return (f"{name} made a {obj} out of {v}.", f"What is the {obj} made of?", v,
            f"the {obj} is made of {v}.")


def format_item(rng: random.Random, split: str, fmt: str) -> Item:
    check_split(split)
    story, question, value, sentence = _story(rng, split)
    if fmt == "uppercase":
        instr, answer, wrong = "Answer in uppercase letters.", value.upper(), value
    elif fmt == "one_word":
        instr, answer, wrong = "Answer with exactly one word.", value, cap(sentence)
    elif fmt == "sentence":
        instr, answer, wrong = "Answer in a full sentence.", cap(sentence), value
    elif fmt == "start_with":
        opener = rng.choice(OPENERS)
        instr = f"Start your answer with the word {opener}."
        answer, wrong = f"{opener}, {sentence}", cap(sentence)
    elif fmt == "quotes":
        instr, answer, wrong = "Put your one-word answer in double quotes.", f'"{value}"', value
    else:
        raise ValueError(f"unknown format {fmt!r}")
    system = rng.choice(SYSTEMS) if split == "train" else SYSTEMS[0]
    user = f"{story} {question} {instr}"
    return Item(prompt=render_chat(system, user), answer=answer, wrong=wrong, category=fmt,
                stop=CHAT_STOP, meta={"value": value})


def sample(rng: random.Random, split: str, category: str | None = None) -> Item:
    return format_item(rng, split, category or rng.choice(FORMATS))


def corpus_text(rng: random.Random, split: str) -> str:
    item = sample(rng, split)
    return item.prompt + item.answer + CHAT_STOP + "\n"


def heldout_entities() -> set[str]:
    return set()  # held-out stories are new combinations of the shared names and objects
