"""Small random Qwen3 Q1_0 (or Q2_0) GGUF models with a real byte-level BPE tokenizer, in seconds.

Tests and the smoke workflow use them; any shape can be asked for (head_dim need not equal
hidden / heads, the LM head may be tied or untied).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from neagari.engine.config import ModelConfig, tensor_shapes
from neagari.engine.export import is_norm, write_model

# Varied text for the fixture tokenizer: prose, numbers, code, whitespace, non-ASCII.
_FIXTURE_TEXT = """The quick brown fox jumps over the lazy dog. A model reads tokens and predicts the next one.
Paris is the capital of France; Berlin is the capital of Germany; Rome is the capital of Italy.
In 1969, 3 astronauts flew 384,400 km. Pi is about 3.14159 and e is about 2.71828.
def add(a, b):
    return a + b

for i in range(10):
    print(i * i)
{"status": "ok", "items": [1, 2, 3]}  SELECT * FROM users WHERE id = 42;
Les élèves étudient à l'école. Straße, naïve café, 日本語のテキスト, emoji 🤖 and ünïcödé.
I don't know; you'll see; they're here; we've done it; she'd agree; IT'S LOUD.
   indented    text\twith\ttabs

and blank lines. Extract the sentence about dosage. The patient takes 5 mg twice daily.
"""


@dataclass(frozen=True)
class FixtureSpec:
    n_layer: int = 2
    hidden: int = 128
    ffn: int = 256
    n_head: int = 4
    n_kv_head: int = 2
    head_dim: int = 32
    vocab_size: int = 512
    tied_embeddings: bool = True
    context_length: int = 512
    rope_theta: float = 10000.0
    seed: int = 0
    block_type: int = 41  # GGML type of the linear weights: Q1_0 (41) or Q2_0 (42)


@lru_cache(maxsize=8)
def fixture_tokenizer_metadata(vocab_size: int) -> dict:
    from neagari.engine.tokenizer import gguf_tokenizer_metadata, train_bpe

    text = _FIXTURE_TEXT * 4
    words = text.split()
    rng = np.random.default_rng(1234)
    # shuffled recombinations give BPE enough pair statistics to reach larger vocabularies
    extra = [" ".join(rng.choice(words, size=12)) for _ in range(400)]
    tok = train_bpe([text, *extra], vocab_size)
    return gguf_tokenizer_metadata(tok)


def random_weights(cfg: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """Float weights with variance-preserving scales, so logits are neither flat nor saturated."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in tensor_shapes(cfg).items():
        if is_norm(name):
            weights[name] = (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
    return weights


def write_fixture_model(path: str | os.PathLike, spec: FixtureSpec = FixtureSpec()) -> Path:
    """Write a random Qwen3 GGUF of ``spec.block_type``; the vocabulary is whatever BPE reaches up
    to vocab_size."""
    tok_meta = fixture_tokenizer_metadata(spec.vocab_size)
    cfg = ModelConfig(n_layer=spec.n_layer, hidden=spec.hidden, ffn=spec.ffn, n_head=spec.n_head,
                      n_kv_head=spec.n_kv_head, head_dim=spec.head_dim,
                      vocab_size=len(tok_meta["tokenizer.ggml.tokens"]), context_length=spec.context_length,
                      rope_theta=spec.rope_theta, tied_embeddings=spec.tied_embeddings)
    return write_model(path, cfg, random_weights(cfg, spec.seed), tok_meta, name=f"neagari-fixture-{spec.seed}",
                       block_type=spec.block_type)


def spec_from_dict(d: dict) -> FixtureSpec:
    return replace(FixtureSpec(), **d)
