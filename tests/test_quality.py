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
