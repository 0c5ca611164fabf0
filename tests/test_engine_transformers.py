"""Our Qwen3 forward pass against transformers' Qwen3ForCausalLM on the same dequantized weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neagari.engine.engine import Engine
from neagari.engine.gguf_io import GGUFFile

transformers = pytest.importorskip("transformers")

PROMPTS = [[5, 17, 42, 99, 3, 250, 7], [300, 2], [11] * 20 + [400, 12, 88], [64]]


def reference_model(path) -> "transformers.Qwen3ForCausalLM":
    from neagari.engine.config import ModelConfig

    f = GGUFFile(path)
    c = ModelConfig.from_gguf(f)
    hf_cfg = transformers.Qwen3Config(
        vocab_size=c.vocab_size, hidden_size=c.hidden, intermediate_size=c.ffn, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head, head_dim=c.head_dim,
        rms_norm_eps=c.rms_eps, rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        tie_word_embeddings=c.tied_embeddings, max_position_embeddings=c.context_length)
    model = transformers.Qwen3ForCausalLM(hf_cfg).eval()
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not c.tied_embeddings:
        names["lm_head.weight"] = "output.weight"
    hf = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
          "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(c.n_layer):
        for k, v in hf.items():
            names[f"model.layers.{i}.{k}.weight"] = f"blk.{i}.{v}.weight"
    state = {k: torch.from_numpy(f.dequantize(v).copy()) for k, v in names.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(m == "lm_head.weight" for m in missing), (missing, unexpected)
    return model


@pytest.fixture(scope="module")
def pair(fixture_model):
    return Engine.load(fixture_model), reference_model(fixture_model)


def test_all_position_logits_match_transformers(pair):
    eng, ref = pair
    ours = eng.logits(PROMPTS, last_only=False)
    with torch.no_grad():
        for ids, got in zip(PROMPTS, ours):
            want = ref(torch.tensor([ids])).logits[0]
            assert got.shape == want.shape
            assert (got - want).abs().max().item() <= 1e-3


def test_batched_last_token_equals_single(pair):
    eng, ref = pair
    batched = torch.stack(eng.logits(PROMPTS))
    single = torch.stack([eng.logits([p])[0] for p in PROMPTS])
    assert (batched - single).abs().max().item() <= 1e-4
    with torch.no_grad():
        want = torch.stack([ref(torch.tensor([p])).logits[0, -1] for p in PROMPTS])
    assert (batched - want).abs().max().item() <= 1e-3


def test_generate_matches_transformers_greedy(pair):
    eng, ref = pair
    prompts = PROMPTS[:3]
    ours = eng.generate(prompts, max_new_tokens=12, stop_ids=set())
    for ids, got in zip(prompts, ours):
        with torch.no_grad():
            out = ref.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
        assert got == out[0, len(ids):].tolist()


def test_uncached_weights_give_same_logits(fixture_model):
    cached = Engine.load(fixture_model)
    plain = Engine.load(fixture_model, cache_weights=False)
    a = torch.stack(cached.logits(PROMPTS))
    b = torch.stack(plain.logits(PROMPTS))
    assert np.allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_pad_batch_left_pads_and_counts_real_positions(fixture_model):
    engine = Engine.load(fixture_model)
    tokens, valid, positions = engine.pad_batch([[7, 8, 9], [5]])
    assert tokens.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert valid.tolist() == [[True] * 3, [False, False, True]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]
    with pytest.raises(ValueError, match="at least one token"):
        engine.pad_batch([[1], []])


def test_hidden_states_last_token_and_head(fixture_model):
    engine = Engine.load(fixture_model)
    full = engine.hidden_states(PROMPTS, batch_size=3)
    last = engine.hidden_states(PROMPTS, batch_size=3, last_token=True)
    assert last.shape == (engine.cfg.n_layer + 1, len(PROMPTS), engine.cfg.hidden)
    assert [s.shape[0] for s in full[0]] == [len(p) for p in PROMPTS]
    for layer in range(engine.cfg.n_layer + 1):
        assert torch.equal(last[layer], torch.stack([s[-1] for s in full[layer]]))
    # the top state, through the final norm and the head, is what logits returns
    m = engine.model
    with torch.inference_mode():
        lg = m.output(m.output_norm(last[-1].to(engine.device))).float().cpu()
    assert np.allclose(lg.numpy(), torch.stack(engine.logits(PROMPTS)).numpy(), atol=1e-5)


def test_weight_is_the_dense_matrix(fixture_model):
    engine = Engine.load(fixture_model)
    f = GGUFFile(fixture_model)
    for name in ("blk.0.ffn_down.weight", "blk.1.attn_q.weight", "token_embd.weight"):
        assert np.array_equal(engine.weight(name).cpu().numpy(), f.dequantize(name)), name
    with pytest.raises(KeyError):
        engine.weight("blk.0.attn_norm.weight")
