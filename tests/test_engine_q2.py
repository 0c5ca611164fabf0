"""Our engine on Q2_0 and mixed Q1_0/Q2_0/float files, against llama.cpp and against
transformers' Qwen3 on the same weights, dequantized by ggml itself.

llama.cpp's CPU Q2_0 kernel, like its Q1_0 one, rounds activations to 8 bits before the dot
product: max |ours - llama.cpp| / max |llama.cpp logit| measured 0.0137..0.0245 per prompt over
the conftest shapes written as Q2_0 and the TEXTS of test_engine_llama (per-shape means 0.0173,
0.0204, 0.0180; the mixed file 0.0162..0.0212, mean 0.0185), on an Intel Xeon (x86-64, one
thread). As there, the bounds are twice the measured values. Greedy tokens and argmaxes are
compared away from near-ties of either side, at agreement.TERNARY_TIE, twice agreement.TIE: on a mixed file
(seed 6) the two split at a step whose margins were 0.0144 (ours) and 0.0114 (llama.cpp), a
rounding flip just above the shared tie.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import SHAPES
from ggml_ref import dequantize_rows
from neagari.engine import q1, q2
from neagari.engine.config import ModelConfig
from neagari.engine.engine import Engine
from neagari.engine.export import write_model
from neagari.engine.fixtures import fixture_tokenizer_metadata, random_weights, write_fixture_model
from neagari.engine.gguf_io import TYPE_F16, TYPE_F32, GGUFFile
from neagari.engine.model import DenseLinear, Q1Linear, Q2Linear
from neagari.evaluation.agreement import TERNARY_TIE, compare_greedy, tie_for

REL_TOL = 0.049
MEAN_REL_TOL = 0.041
TIE = TERNARY_TIE
PROMPTS = [[5, 17, 42, 99, 3, 250, 7], [300, 2], [11] * 20 + [400, 12, 88], [64]]
# the mixed file: the MLP of block 0, attention's q and k and the LM head ternary, the embedding
# and everything else 1-bit, one matrix F16, the norms F32
MIXED = {"blk.0.ffn_gate.weight": q2.GGML_TYPE, "blk.0.ffn_up.weight": q2.GGML_TYPE,
         "blk.0.ffn_down.weight": q2.GGML_TYPE, "blk.1.attn_q.weight": q2.GGML_TYPE,
         "blk.1.attn_k.weight": q2.GGML_TYPE, "output.weight": q2.GGML_TYPE, "blk.1.attn_v.weight": TYPE_F16}


@pytest.fixture(scope="module")
def q2_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("q2models")
    models = {name: write_fixture_model(root / f"{name}.gguf", dataclasses.replace(spec, block_type=q2.GGML_TYPE))
              for name, spec in SHAPES.items()}
    tok = fixture_tokenizer_metadata(512)
    cfg = ModelConfig(n_layer=2, hidden=128, ffn=256, n_head=4, n_kv_head=2, head_dim=32,
                      vocab_size=len(tok["tokenizer.ggml.tokens"]), tied_embeddings=False)
    # seed 7: margins wide enough to compare 99 greedy steps with llama.cpp (seed 5's tie within a few)
    models["mixed"] = write_model(root / "mixed.gguf", cfg, random_weights(cfg, seed=7), tok, tensor_types=MIXED)
    return models


def reference_tensors(path) -> tuple[dict, dict]:
    """(metadata, tensor name → float32 (out, in)): blocks dequantized by ggml's own to_float."""
    f = GGUFFile(path)
    tensors = {}
    for name, rec in f.tensors.items():
        raw = np.asarray(f.raw(name))
        if rec.ggml_type in (q1.GGML_TYPE, q2.GGML_TYPE):
            tensors[name] = dequantize_rows(rec.ggml_type, raw, rec.shape[-1])
        elif rec.ggml_type == TYPE_F32:
            tensors[name] = raw.view("<f4").reshape(rec.shape).copy()
        else:
            assert rec.ggml_type == TYPE_F16, name
            tensors[name] = raw.view("<f2").astype(np.float32).reshape(rec.shape)
    return dict(f.metadata), tensors


def test_file_types_and_layers(q2_models):
    f = GGUFFile(q2_models["tied_gqa"])
    assert f.metadata["general.file_type"] == q2.LLAMA_FTYPE
    assert {r.type_name for r in f.tensors.values()} == {"Q2_0", "F32"}
    eng = Engine.load(q2_models["mixed"])
    modules = eng.model.tensor_modules()
    kinds = {name: type(modules[name]) for name in MIXED}
    assert kinds.pop("blk.1.attn_v.weight") is DenseLinear and set(kinds.values()) == {Q2Linear}
    assert type(eng.linear("blk.1.ffn_down.weight")) is Q1Linear and type(eng.linear("token_embd.weight")) is Q1Linear
    with pytest.raises(KeyError, match="not a Q1_0 or Q2_0 tensor"):
        eng.linear("blk.1.attn_v.weight")


# ---------------------------------------------------------------------------- transformers


@pytest.mark.parametrize("name", sorted(SHAPES) + ["mixed"])
def test_logits_and_greedy_match_transformers(q2_models, name):
    transformers = pytest.importorskip("transformers")  # noqa: F841 (the reference needs it)
    from test_engine_transformers import reference_from_tensors

    eng = Engine.load(q2_models[name])
    ref = reference_from_tensors(*reference_tensors(q2_models[name]))
    with torch.no_grad():
        for ids, got in zip(PROMPTS, eng.logits(PROMPTS, last_only=False)):
            want = ref(torch.tensor([ids])).logits[0]
            assert (got - want).abs().max().item() <= 1e-3
        for ids, got in zip(PROMPTS[:3], eng.generate(PROMPTS[:3], max_new_tokens=12, stop_ids=set())):
            out = ref.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                               pad_token_id=0)
            assert got == out[0, len(ids):].tolist()


def test_weights_are_ggml_dequantized(q2_models):
    eng = Engine.load(q2_models["mixed"])
    plain = Engine.load(q2_models["mixed"], cache_weights=False)
    _, ref = reference_tensors(q2_models["mixed"])
    for name in ("blk.0.ffn_down.weight", "blk.1.attn_q.weight", "blk.1.ffn_up.weight", "token_embd.weight"):
        assert np.array_equal(eng.weight(name).numpy(), ref[name]), name
        assert np.array_equal(plain.weight(name).numpy(), ref[name]), name


# ---------------------------------------------------------------------------- llama.cpp


@pytest.fixture(scope="module")
def llama_engines(q2_models):
    pytest.importorskip("llama_cpp")
    from test_engine_llama import llama

    return {name: (Engine.load(p), llama(p)) for name, p in q2_models.items()}


@pytest.mark.llama
@pytest.mark.parametrize("name", sorted(SHAPES) + ["mixed"])
def test_logits_agree_with_llama_cpp(llama_engines, name):
    from test_engine_llama import assert_logits_agree

    assert_logits_agree(*llama_engines[name], rel_tol=REL_TOL, mean_rel_tol=MEAN_REL_TOL, tie=TIE)


@pytest.mark.llama
@pytest.mark.parametrize("name", sorted(SHAPES) + ["mixed"])
def test_greedy_generation_agrees_with_llama_cpp(llama_engines, name):
    """30 greedy tokens equal llama.cpp's up to the first near-tie on either side; the steps
    compared add up to at least one whole continuation per file (as test_engine_llama's)."""
    from test_engine_llama import assert_greedy_agrees

    assert_greedy_agrees(*llama_engines[name], tie=TIE)


def test_the_cross_check_takes_the_ternary_tie_for_files_with_q2_tensors():
    """A split met on the float member rounded to Q2_0 (a held-out verbatim prompt): the two
    engines agreed 8 tokens, then chose differently at margins 0.016 (ours) and 0.0134
    (llama.cpp): a disagreement at the 1-bit tie, a near-tie for a file with ternary tensors."""
    ours, ours_m = [1208, 89, 1160, 1181, 1527, 28, 660, 1124, 1053], [0.33, 0.30, 0.044, 0.031, 0.011, 0.079,
                                                                       0.098, 0.35, 0.016]
    ref, ref_m = [1208, 89, 1160, 1181, 1527, 28, 660, 1124, 969], [0.32, 0.30, 0.047, 0.029, 0.022, 0.070,
                                                                     0.097, 0.36, 0.0134]
    assert compare_greedy(ours, ours_m, ref, ref_m, tie=tie_for([q1.GGML_TYPE, 0])).verdict == "disagree"
    assert compare_greedy(ours, ours_m, ref, ref_m, tie=tie_for([q1.GGML_TYPE, q2.GGML_TYPE])).verdict == "near-tie"
