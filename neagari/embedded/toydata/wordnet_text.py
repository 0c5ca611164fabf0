"""WordNet text: corpus-only sentences that state WordNet's noun taxonomy in plain English.

The terrain analysis (``neagari.analysis.terrain.wordnet_alignment``) asks whether a model's geometry follows
WordNet; a model that never read a sentence relating WordNet nouns can only answer no. These
texts give the embedded model that relation to learn, over a fixed subset of common concrete nouns
(the hyponyms, a few steps down, of the roots in :data:`ROOTS`): is-a sentences ("A dog is a kind
of canine."), is-a chains, lists of kinds ("Kinds of canine: dog, wolf and fox.") and the
WordNet definition of the word's first sense. Each noun stands for its first (most frequent)
sense, the sense the alignment measures. Not probed, not evaluated.

Needs WordNet 3.0 installed (``python -m neagari.workflow.wordnet``); the texts are a function of the rng
and of the checksummed WordNet files only. Splits: a sentence belongs to one split by a stable
hash of its text (``common.belongs``), so held-out text never repeats a training sentence but
uses the same nouns (the tokenizer must hold them for the alignment to measure anything).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from .common import belongs, check_split

# Roots of the noun subset: concrete, everyday categories a small model can learn from text.
ROOTS = ("animal.n.01", "food.n.02", "fruit.n.01", "vegetable.n.01", "tree.n.01", "flower.n.01",
         "vehicle.n.01", "tool.n.01", "furniture.n.01", "container.n.01", "clothing.n.01",
         "musical_instrument.n.01", "building.n.01", "body_part.n.01", "chromatic_color.n.01",
         "weapon.n.01", "fabric.n.01", "metal.n.01", "beverage.n.01", "occupation.n.01")
MAX_DEPTH = 4  # is-a steps below a root
PER_ROOT = 40  # most frequent nouns kept per root (SemCor counts, then alphabetical)


@dataclass(frozen=True)
class Noun:
    word: str
    parent: str  # first lemma of the first hypernym, spaces for underscores
    chain: tuple[str, ...]  # parent, grandparent, ... up to the root (readable lemmas)
    definition: str
    siblings: tuple[str, ...]  # other subset nouns under the same parent


def _readable(synset) -> str:
    return synset.lemma_names()[0].replace("_", " ").lower()


def _is_word(w: str) -> bool:
    return w.isascii() and w.isalpha() and w.islower() and len(w) >= 3


@lru_cache(maxsize=2)
def nouns(data_dir: str | None = None) -> tuple[Noun, ...]:
    """The noun subset, in a fixed order (by root, then frequency, then alphabet)."""
    from neagari.workflow.wordnet import in_order, load_wordnet

    wn = load_wordnet(data_dir)
    chosen: dict[str, object] = {}
    for root_name in ROOTS:
        root = wn.synset(root_name)
        frontier, seen, cands = [root], {root}, []
        for _ in range(MAX_DEPTH):
            frontier = [h for s in frontier for h in in_order(s.hyponyms()) if h not in seen]
            seen.update(frontier)
            for s in frontier:
                w = s.lemma_names()[0]
                first = wn.synsets(w, "n")
                if _is_word(w) and first and first[0] == s and w not in chosen:
                    cands.append((-sum(l.count() for l in s.lemmas()), w, s))
        for _, w, s in sorted(cands)[:PER_ROOT]:
            chosen.setdefault(w, s)
    by_parent: dict[object, list[str]] = {}
    for w, s in chosen.items():
        by_parent.setdefault(in_order(s.hypernyms())[0], []).append(w)
    out = []
    for w, s in chosen.items():
        chain, cur = [], s
        while cur.hypernyms() and len(chain) < 6:
            cur = in_order(cur.hypernyms())[0]
            chain.append(_readable(cur))
            if cur.name() in ROOTS:
                break
        parent = in_order(s.hypernyms())[0]
        out.append(Noun(w, chain[0], tuple(chain), s.definition(),
                        tuple(x for x in by_parent[parent] if x != w)))
    return tuple(out)


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _and(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def sentence(rng: random.Random, noun: Noun) -> str:
    """One sentence about ``noun``: is-a, chain, kinds or definition."""
    kind = rng.choice(("isa", "isa", "chain", "kinds", "definition"))
    if kind == "chain" and len(noun.chain) >= 2:
        links = [noun.word, *noun.chain[: rng.randint(2, len(noun.chain))]]
        return "; ".join(f"{_a(a).capitalize() if k == 0 else _a(a)} is {_a(b)}"
                         for k, (a, b) in enumerate(zip(links, links[1:]))) + "."
    if kind == "kinds" and noun.siblings:
        kinds = [noun.word, *rng.sample(noun.siblings, min(len(noun.siblings), rng.randint(1, 4)))]
        rng.shuffle(kinds)
        return f"Kinds of {noun.parent}: {_and(kinds)}."
    if kind == "definition":
        return f"{_a(noun.word).capitalize()} is {noun.definition}."
    form = rng.choice(("{A} is a kind of {p}.", "{A} is {ap}.", "Every {w} is {ap}."))
    return form.format(A=_a(noun.word).capitalize(), p=noun.parent, ap=_a(noun.parent), w=noun.word)


def corpus_text(rng: random.Random, split: str) -> str:
    """A paragraph of 3 to 6 WordNet sentences of ``split`` (one line each)."""
    check_split(split)
    pool = nouns()
    lines = []
    for _ in range(rng.randint(3, 6)):
        while True:
            s = sentence(rng, rng.choice(pool))
            if belongs(s, split):
                break
        lines.append(s)
    return "\n".join(lines) + "\n"
