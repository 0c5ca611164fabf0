"""The corpus variants of the 2026-11-23 embedded-model sweeps (BENCHMARKS.md), rebuilt exactly:
a workflow corpus plus extra copy-drill texts, shuffled.

  python benchmarks/embedded-sweeps/corpus_variant.py RECIPE results/data/corpus.train.jsonl OUT.jsonl

Recipes (drill = a word list, then the same list again; "occurrences" counts the list's copies):
  tx3  6000 texts of 3-5 drills with 3 occurrences (the workflow's drills plus one more repeat)
  cx3  6000 more texts of the workflow's own drills (2 occurrences)
  t6   12000 texts of 2-4 drills, 3-8 words, 3 occurrences
  q    6000 texts of 2-4 drills, 5-12 words, 4 occurrences
  st3  6000 texts of 3-5 drills, 3 occurrences, words = single-token words of the tokenizer
  mix  3000 single-token texts and 3000 pool-word texts, as st3
"""

from __future__ import annotations

import json
import random
import sys

import tokenizers

from neagari.embedded.toydata import copying


def _workflow_triple(rng):  # tx3: a workflow drill with its answer line once more
    out = []
    for _ in range(rng.randint(3, 5)):
        d = copying.drill(rng, "train")
        out.append(d + d.rstrip("\n").split("\n")[1] + "\n")
    return "".join(out)


def _lists(rng, occurrences, lo, hi):  # t6, q
    out = []
    for _ in range(rng.randint(2, 4)):
        words = [str(rng.randint(2, 999)) if rng.random() < 0.1 else copying._word(rng, "train")
                 for _ in range(rng.randint(lo, hi))]
        line = " ".join(words)
        ask, answer = rng.choice(copying.CUES)
        out.append(f"{ask} {line}\n" + "".join(f"{answer} {line}\n" for _ in range(occurrences - 1)))
    return "".join(out)


def _picked(rng, pick):  # st3, mix
    out = []
    for _ in range(rng.randint(3, 5)):
        line = " ".join(pick(rng) for _ in range(rng.randint(3, 8)))
        ask, answer = rng.choice(copying.CUES)
        out.append(f"{ask} {line}\n{answer} {line}\n{answer} {line}\n")
    return "".join(out)


def single_token_words(tokenizer_path: str) -> list[str]:
    tok = tokenizers.Tokenizer.from_file(tokenizer_path)
    words = sorted({tok.decode([i]).strip() for i in range(tok.get_vocab_size())
                    if tok.decode([i]).startswith(" ") and tok.decode([i]).strip().isalpha()
                    and len(tok.decode([i]).strip()) >= 3})
    return [w for w in words if len(tok.encode(" " + w).ids) == 1]


def main(recipe: str, src: str, dst: str, tokenizer_path: str = "results/models/embedded/tokenizer.json") -> None:
    records = [json.loads(line) for line in open(src)]
    rng = random.Random(12345)
    if recipe == "tx3":
        extra = [_workflow_triple(rng) for _ in range(6000)]
    elif recipe == "cx3":
        extra = [copying.corpus_text(rng, "train") for _ in range(6000)]
    elif recipe == "t6":
        extra = [_lists(rng, 3, 3, 8) for _ in range(12000)]
    elif recipe == "q":
        extra = [_lists(rng, 4, 5, 12) for _ in range(6000)]
    elif recipe in ("st3", "mix"):
        words = single_token_words(tokenizer_path)
        n_single = 6000 if recipe == "st3" else 3000
        extra = [_picked(rng, lambda r: r.choice(words)) for _ in range(n_single)]
        extra += [_picked(rng, lambda r: copying._word(r, "train")) for _ in range(6000 - n_single)]
    else:
        raise SystemExit(f"unknown recipe {recipe!r}; see --help")
    records += [{"domain": "copying", "text": t} for t in extra]
    random.Random(7).shuffle(records)
    with open(dst, "w") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
