"""Our Qwen3 forward pass against transformers' Qwen3ForCausalLM on the same dequantized weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neagari.engine.engine import Engine

transformers = pytest.importorskip("transformers")

PROMPTS = [[5, 17, 42, 99, 3, 250, 7], [300, 2], [11] * 20 + [400, 12, 88], [64]]


def dequantize_q1_0(raw: np.ndarray, out_f: int, in_f: int) -> np.ndarray:
    """Q1_0 bytes → float32 (out, in), written here from the block layout (not neagari's q1):
    each 18-byte block is a little-endian fp16 scale d, then 16 bytes of sign bits, weight j of the
    block +d where bit j % 8 (least significant first) of byte j // 8 is set, else -d: llama.cpp's
    dequantize_row_q1_0, against which test_q1's hand blocks and test_engine_llama check us."""
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, 18)
    d = blocks[:, 0].astype(np.uint16) | (blocks[:, 1].astype(np.uint16) << 8)
    d = d.view(np.float16).astype(np.float32)
    j = np.arange(128)
    bits = (blocks[:, 2 + j // 8] >> (j % 8)) & 1  # (n_blocks, 128)
    return np.where(bits == 1, d[:, None], -d[:, None]).reshape(out_f, in_f)


def read_tensors(path) -> tuple[dict, dict]:
    """(metadata key → value, tensor name → float32 array in PyTorch (out, in) order), read with
    gguf-py's GGUFReader directly."""
    import gguf

    r = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in r.fields.items()}
    tensors = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # GGUF lists ne0 (the row) first
        if int(t.tensor_type) == 41:  # Q1_0
            tensors[t.name] = dequantize_q1_0(t.data, *shape)
        elif int(t.tensor_type) == 0:  # F32
            tensors[t.name] = np.array(t.data, dtype=np.float32).reshape(shape)
        elif int(t.tensor_type) == 1:  # F16
            tensors[t.name] = np.array(t.data, dtype=np.float16).astype(np.float32).reshape(shape)
        else:
            raise AssertionError(f"{t.name}: tensor type {t.tensor_type} not handled by this reference")
    return meta, tensors


def reference_model(path) -> "transformers.Qwen3ForCausalLM":
    return reference_from_tensors(*read_tensors(path))


def reference_from_tensors(meta: dict, w: dict) -> "transformers.Qwen3ForCausalLM":
    """transformers' Qwen3 from a file's metadata and its float32 tensors (llama.cpp names)."""
    assert meta["general.architecture"] == "qwen3"
    tied = "output.weight" not in w
    hf_cfg = transformers.Qwen3Config(
        vocab_size=w["token_embd.weight"].shape[0], hidden_size=meta["qwen3.embedding_length"],
        intermediate_size=meta["qwen3.feed_forward_length"], num_hidden_layers=meta["qwen3.block_count"],
        num_attention_heads=meta["qwen3.attention.head_count"],
        num_key_value_heads=meta["qwen3.attention.head_count_kv"], head_dim=meta["qwen3.attention.key_length"],
        rms_norm_eps=meta["qwen3.attention.layer_norm_rms_epsilon"],
        rope_parameters={"rope_type": "default", "rope_theta": meta["qwen3.rope.freq_base"]},
        tie_word_embeddings=tied, max_position_embeddings=meta["qwen3.context_length"])
    model = transformers.Qwen3ForCausalLM(hf_cfg).eval()
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not tied:
        names["lm_head.weight"] = "output.weight"
    hf = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
          "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(meta["qwen3.block_count"]):
        for k, v in hf.items():
            names[f"model.layers.{i}.{k}.weight"] = f"blk.{i}.{v}.weight"
    assert set(names.values()) == set(w), set(w) ^ set(names.values())  # every tensor of the file is used
    state = {k: torch.from_numpy(w[v]) for k, v in names.items()}
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


def test_reference_dequantizer_on_a_hand_block():
    block = np.zeros(18, dtype=np.uint8)
    block[0:2] = np.array([0.25], dtype="<f2").view(np.uint8)
    block[2] = 0b00000101  # weights 0 and 2 positive
    block[17] = 0b10000000  # weight 127 positive
    w = dequantize_q1_0(block, 1, 128)[0]
    assert w[0] == w[2] == w[127] == 0.25
    assert (np.delete(w, [0, 2, 127]) == -0.25).all()


def test_weight_is_the_dense_matrix(fixture_model):
    engine = Engine.load(fixture_model)
    _, ref = read_tensors(fixture_model)
    for name in ("blk.0.ffn_down.weight", "blk.1.attn_q.weight", "token_embd.weight"):
        assert np.array_equal(engine.weight(name).cpu().numpy(), ref[name]), name
    with pytest.raises(KeyError):
        engine.weight("blk.0.attn_norm.weight")
