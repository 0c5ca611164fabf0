"""The quality report's copy diagnostic: token bookkeeping against the tokenizer's own offsets."""

from __future__ import annotations

import math
import random

import pytest
import torch

from neagari.evaluation.quality import copy_diagnostic, drill_pieces
from neagari.embedded.toydata import copying


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE trained on drills (the workflow trains its own the same way)."""
    from neagari.engine.tokenizer import train_bpe

    rng = random.Random(0)
    return train_bpe([copying.corpus_text(rng, "train") for _ in range(300)], vocab_size=400)


def test_drill_pieces_tokenize_like_the_whole_drill(tokenizer):
    rng = random.Random(1)
    for _ in range(200):
        text = copying.drill(rng, "heldout")
        pieces = drill_pieces(text)
        assert "".join(pieces) == text
        assert [i for p in pieces for i in tokenizer.encode(p).ids] == tokenizer.encode(text).ids
    with pytest.raises(ValueError, match="not a copy drill"):
        drill_pieces("List: a b\nCopy: a c\n")


class _OracleOnRepeats:
    """An engine stand-in that predicts the next token exactly (logit 10, the rest 0) where that
    token lies in the repeated list, located from the tokenizer's character offsets, and is
    uniform elsewhere. Its diagnostic is known in closed form."""

    def __init__(self, tokenizer, texts):
        self.V = tokenizer.get_vocab_size()
        self.tokenizer = self
        self._tok = tokenizer
        self._repeat = {}
        for t in texts:
            enc = tokenizer.encode(t)
            line = t.split("\n", 1)[0].split(": ", 1)[1]
            start = t.index(" " + line, t.index("\n"))  # the repetition's characters, its space included
            self._repeat[tuple(enc.ids)] = [start <= a <= start + len(line) for a, _ in enc.offsets]

    def encode(self, text):
        return self._tok.encode(text).ids

    def logits(self, seqs, last_only=False, batch_size=32):
        out = []
        for ids in seqs:
            lg = torch.zeros(len(ids), self.V)
            for i, in_repeat in enumerate(self._repeat[tuple(ids)][1:]):
                if in_repeat:
                    lg[i, ids[i + 1]] = 10.0
            out.append(lg)
        return out


def test_copy_diagnostic_against_a_closed_form(tokenizer):
    rng = random.Random(2)
    texts = [copying.drill(rng, "heldout") for _ in range(30)]
    d = copy_diagnostic(_OracleOnRepeats(tokenizer, texts), texts)
    V = tokenizer.get_vocab_size()
    assert d["lists"] == 30 and d["first_tokens"] == d["repeat_tokens"] > 30
    assert d["first_nll"] == pytest.approx(math.log(V), rel=1e-6)
    assert d["repeat_nll"] == pytest.approx(-math.log(math.exp(10) / (math.exp(10) + V - 1)), rel=1e-4)  # fp32


def test_chance_of_counts_lettered_options():
    from neagari.evaluation.quality import chance_of

    assert chance_of({"prompt": "Q: Which number is smallest?\nA) 27 B) 10 C) 17\nAnswer:"}) == pytest.approx(1 / 3)
    assert chance_of({"prompt": "Q: Pick one.\nA) x B) y\nAnswer:"}) == pytest.approx(1 / 2)
    assert chance_of({"prompt": "347 + 589 = "}) == 0.0
    assert chance_of({"prompt": "def f(a, b):\n    return a"}) == 0.0  # a code line is no option list


def _summary(**over):
    import polars as pl

    rows = []
    for domain, acc, chance, share in (("editing", 0.30, 0.0, 0.40), ("instruction", 0.55, 0.0, 0.25),
                                       ("tool_calling", 0.40, 0.0, 0.50), ("math", 0.27, 0.0, 0.32),
                                       ("coding", 0.80, 0.0, 0.20), ("controls", 0.50, 0.25, None)):
        acc, share = over.get(f"{domain}_acc", acc), over.get(f"{domain}_share", share)
        rows.append({"model": "m", "domain": domain, "eval_n": 200, "eval_accuracy": acc, "eval_chance": chance,
                     "probes_n": 40, "probes_wrong_share": share, "heldout_nll": 2.0, "uniform_nll": math.log(2048)})
    return pl.DataFrame(rows)


def test_quality_bars_on_hand_made_numbers():
    from neagari.evaluation.quality import quality_bars

    copying = {"repeat_nll": 0.03, "first_nll": 2.65}
    rows = quality_bars(_summary(), {"PASS": 10, "COPY": 66}, copying)
    assert len(rows) == 1 + 6 + 5 + 2 + 2 and all(r["met"] for r in rows), [r for r in rows if not r["met"]]
    # each bar fails on its own, at its edge
    failing = {
        "controls": quality_bars(_summary(controls_acc=0.34), {"PASS": 10, "COPY": 10}, copying),  # < 25% + 10 pp
        "coding": quality_bars(_summary(coding_share=0.05), {"PASS": 10, "COPY": 10}, copying),
        "PASS": quality_bars(_summary(), {"PASS": 9, "COPY": 66}, copying),
        "word-list repetition": quality_bars(_summary(), {"PASS": 10, "COPY": 10}, {"repeat_nll": 0.5, "first_nll": 2.6}),
        "word-list first occurrence": quality_bars(_summary(), {"PASS": 10, "COPY": 10}, {"repeat_nll": 0.1, "first_nll": 1.9}),
    }
    for subject, rows in failing.items():
        assert [r["subject"] for r in rows if not r["met"]] == [subject]
    assert quality_bars(_summary(controls_acc=0.35), {"PASS": 10, "COPY": 10}, copying)[6]["met"]  # 35% >= 35%
