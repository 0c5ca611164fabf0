"""Entity and word pools: shared by both splits, or split once and for all into disjoint halves.

Most pools are *shared*: training and held-out items use the same words and differ in how they
combine them (a held-out editing line, story, passage, request or function never occurs in
training; `common.belongs` assigns each combination to one split for good). A first design held
out the words themselves; the small model then had to copy words it had never seen as tokens, and
solved none of the copy tasks (0% exact match on editing, tool calling and verbatim extraction),
which measured its BPE rather than its behaviour. Pools in SPLIT_POOLS still have disjoint halves
(names in the control questions); the held-out tools of tool calling are new entities too.

The pools do not depend on the corpus seed: whatever seeds build the corpus, the probes and the
evaluation sets, held-out content never reaches the training text and the invented facts of the
control domain stay the same. Every pool is disjoint from every other pool (checked in tests).
"""

from __future__ import annotations

import functools
import random

from .common import check_split

WORLD_SEED = "neagari-toydata-world-v1"

# How many invented names each pool takes from the global name list, in this fixed order.
INVENTED_SIZES = {
    "country": 16, "capital": 16, "thing": 16,  # control facts: all learned, none held out
    "ctrl_person": 60, "tool_city": 80, "tool_person": 80, "instr_person": 80,
    "legal": 60, "medical": 60, "api": 60, "logs": 60, "code": 60,
}

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "pr", "r",
           "s", "st", "t", "tr", "v", "z", "th", "sh", "h", "j")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou", "ei", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "x", "nd", "rk", "th", "lt")

REAL_POOLS = {
    # Editing lines are built from these words.
    "edit_word": (
        "amber anchor arrow badge bamboo barrel basket beacon blanket bottle branch breeze "
        "bucket butter cabin candle canvas carpet castle cherry circle cliff clover cobalt "
        "cotton cradle crystal dagger desert dragon fabric falcon feather fiddle forest fossil "
        "fountain gadget galaxy garlic ginger glacier goblet granite harbor hammock island "
        "jacket jungle kettle ladder lantern lemon magnet marble meadow monkey needle orbit "
        "paddle pebble pepper pillow planet pocket puzzle rabbit ribbon rocket saddle shadow "
        "spider sponge statue summit thunder ticket timber tunnel turtle velvet violin wagon "
        "walnut whistle winter wizard yogurt zipper brave calm eager fancy gentle humble jolly "
        "lively mighty narrow proud rapid shiny vivid"
    ).split(),
    # Objects people own in the instruction-following stories.
    "instr_object": (
        "kite scarf mug umbrella bicycle backpack notebook vase teapot sweater wallet guitar "
        "drum bench clock hat boot glove chair sofa tent boat sled trumpet camera radio kayak "
        "tray bowl spoon broom rug quilt flute harp lamp desk stool mitten apron"
    ).split(),
    # Subjects of e-mails, to-do entries and news in the tool-calling requests.
    "tool_topic": (
        "invoice meeting report budget contract itinerary proposal payroll agenda survey "
        "roadmap audit forecast memo briefing newsletter checklist inventory lecture seminar "
        "workshop deadline interview review"
    ).split(),
    "tool_dish": (
        "pizza noodles tacos curry soup salad dumplings burgers pancakes sushi waffles omelets "
        "kebabs risotto lasagna falafel burritos nachos muffins bagels"
    ).split(),
    # Plural nouns naming the data of the toy Python functions.
    "code_noun": (
        "prices scores weights heights ages speeds points votes grades sales costs fees loads "
        "ranks marks levels coins miles bytes pixels frames clicks views likes ratings wages "
        "taxes profits rents bids tips yields volumes depths widths lengths angles distances "
        "balances deposits"
    ).split(),
}


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


@functools.lru_cache(maxsize=1)
def _invented() -> dict[str, tuple[str, ...]]:
    rng = random.Random(WORLD_SEED)
    real = {w for words in REAL_POOLS.values() for w in words}
    names: list[str] = []
    seen: set[str] = set()
    need = sum(INVENTED_SIZES.values())
    while len(names) < need:
        name = "".join(_syllable(rng) for _ in range(rng.choice((2, 2, 2, 3))))
        if not 5 <= len(name) <= 10 or name in seen or name in real:
            continue
        # Names that merely extend another name would share their first tokens; keep them apart.
        if any(name.startswith(o) or o.startswith(name) for o in seen):
            continue
        seen.add(name)
        names.append(name)
    out, start = {}, 0
    for tag, size in INVENTED_SIZES.items():
        out[tag] = tuple(names[start:start + size])
        start += size
    return out


def invented(tag: str) -> tuple[str, ...]:
    """All invented (lowercase) names of one pool, both halves."""
    return _invented()[tag]


def all_pool_names() -> list[str]:
    return list(INVENTED_SIZES) + list(REAL_POOLS)


def full_pool(name: str) -> tuple[str, ...]:
    return invented(name) if name in INVENTED_SIZES else tuple(REAL_POOLS[name])


# Pools whose words themselves are held out (the rest are shared, see the module docstring).
SPLIT_POOLS = frozenset({"ctrl_person"})


def pool(name: str, split: str) -> tuple[str, ...]:
    """The words of a pool `split` may use: all of a shared pool; for SPLIT_POOLS, even positions
    for "train" and odd positions for "heldout"."""
    check_split(split)
    words = full_pool(name)
    if name not in SPLIT_POOLS:
        return words
    return words[0::2] if split == "train" else words[1::2]


def numbers(lo: int, hi: int, split: str) -> tuple[int, ...]:
    """Disjoint halves of an integer range (alternating values), for numbers inside passages."""
    check_split(split)
    vals = range(lo, hi + 1)
    return tuple(v for i, v in enumerate(vals) if (i % 2 == 0) == (split == "train"))


def cap(word: str) -> str:
    return word[:1].upper() + word[1:]
