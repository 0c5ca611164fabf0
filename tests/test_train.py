"""The QAT layer, export and the trained network = the network the engine runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neagari.engine import q1, q2
from neagari.engine.config import ModelConfig
from neagari.engine.engine import Engine
from neagari.engine.export import write_model
from neagari.engine.fixtures import fixture_tokenizer_metadata
from neagari.engine.gguf_io import GGUFFile
from neagari.embedded.train import (PAD, TrainConfig, TrainLinear, answer_weights, block_type, build_model, export_weights, lm_loss,
                           pack_examples, train)


def test_qat_forward_weight_equals_dequantized_export():
    torch.manual_seed(0)
    lin = TrainLinear(6, 384, qat=True, std=0.05)
    with torch.no_grad():
        lin.weight[2, :128] = 0.0  # zero block: scale 0, all bits set
        lin.weight[3, 5] = 0.0  # an exact zero counts as positive
    w_forward = lin.effective_weight().detach().numpy()
    deq = q1.dequantize(lin.q1_blocks())
    assert np.array_equal(w_forward.view(np.uint32), deq.view(np.uint32))  # bit for bit
    # the binarized weight only takes two values per group: ±fp16(mean |w|)
    blocks = np.abs(w_forward).reshape(6, 3, 128)
    assert np.all(blocks == blocks[..., :1])
    # and agrees with llama.cpp's rule (the rule our quantizer reproduces byte for byte) on signs
    ref = q1.dequantize(q1.quantize(lin.weight.detach().numpy()))
    assert np.array_equal(np.sign(ref) >= 0, np.sign(deq) >= 0)
    assert np.allclose(np.abs(ref), np.abs(deq), rtol=1e-3)


def test_straight_through_gradient():
    lin = TrainLinear(2, 128, qat=True, std=0.1)
    x = torch.randn(3, 128)
    lin(x).sum().backward()
    # STE: the gradient w.r.t. the latent weight is that of a plain linear layer
    assert torch.allclose(lin.weight.grad, x.sum(0).expand(2, 128))


@pytest.mark.parametrize("qat", [True, False])
def test_trained_model_exports_to_the_engine(tmp_path, qat):
    tok = fixture_tokenizer_metadata(512)
    cfg = ModelConfig(n_layer=2, hidden=128, ffn=256, n_head=2, n_kv_head=1, head_dim=64,
                      vocab_size=len(tok["tokenizer.ggml.tokens"]), context_length=128, rope_theta=10000.0,
                      tied_embeddings=not qat)
    model = build_model(cfg, qat=qat, seed=0)
    rng = np.random.default_rng(0)
    rows = pack_examples([list(rng.integers(0, 50, size=20)) for _ in range(64)], 32, sep=0)
    hist = train(model, rows, rows[:4], TrainConfig(steps=8, batch_size=4, seq_len=32, warmup=2, eval_every=4))
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    path = write_model(tmp_path / "m.gguf", cfg, export_weights(model), tok)
    f = GGUFFile(path)
    # every linear layer in the file is the training forward's binarized weight, bit for bit
    lin = model.blocks[1].mlp.ffn_down
    w = lin.effective_weight().detach().numpy() if qat else q1.dequantize(q1.quantize(lin.weight.detach().numpy()))
    assert np.array_equal(f.dequantize("blk.1.ffn_down.weight"), w)
    eng = Engine.load(path)
    ids = [[3, 9, 27, 5, 1], [44, 2]]
    ours = torch.stack(eng.logits(ids))
    if qat:  # the engine runs exactly the trained network
        model.eval()
        with torch.no_grad():
            for b, seq in enumerate(ids):
                x = torch.tensor([seq])
                want = model(x, torch.arange(len(seq))[None], torch.ones(len(seq), len(seq), dtype=torch.bool).tril()[None, None])[0, -1]
                assert (ours[b] - want).abs().max() < 1e-4


def test_ternary_forward_weight_equals_dequantized_export():
    """Ternary QAT: s = fp16(mean |w|) per 64-weight Q2_0 block, codes clip(round(w / s), -1, 1),
    checked by hand on one block, and the exported Q2_0 bytes dequantize to the forward's weights
    bit for bit."""
    torch.manual_seed(0)
    lin = TrainLinear(4, 256, qat=True, std=0.05, ternary=True)
    with torch.no_grad():
        lin.weight[1, :64] = 0.0  # an all-zero block: scale 0, every code 0
        lin.weight[2, :64] = torch.tensor([0.3, -0.3, 0.05, -0.05] * 16)  # mean |w| 0.175
    w_forward = lin.effective_weight().detach().numpy()
    deq = q2.dequantize(lin.blocks())
    assert np.array_equal(w_forward.view(np.uint32), deq.view(np.uint32))
    assert not w_forward[1, :64].any()
    s = np.float32(np.float16(0.175))  # 0.3 / s = 1.71 -> 1, 0.05 / s = 0.29 -> 0
    assert np.array_equal(w_forward[2, :64], np.array([s, -s, 0, 0] * 16, dtype=np.float32))
    assert set(np.unique(np.sign(w_forward))) == {-1.0, 0.0, 1.0}
    # the straight-through gradient is that of a plain linear layer
    x = torch.randn(3, 256)
    lin(x).sum().backward()
    assert torch.allclose(lin.weight.grad, x.sum(0).expand(4, 256))


def test_trained_ternary_model_exports_a_q2_file_the_engine_runs(tmp_path):
    tok = fixture_tokenizer_metadata(512)
    cfg = ModelConfig(n_layer=2, hidden=128, ffn=256, n_head=2, n_kv_head=1, head_dim=64,
                      vocab_size=len(tok["tokenizer.ggml.tokens"]), context_length=128, rope_theta=10000.0,
                      tied_embeddings=False)
    model = build_model(cfg, qat=True, seed=0, ternary=True)
    rng = np.random.default_rng(0)
    rows = pack_examples([list(rng.integers(0, 50, size=20)) for _ in range(64)], 32, sep=0)
    train(model, rows, rows[:4], TrainConfig(steps=4, batch_size=4, seq_len=32, warmup=2, eval_every=4))
    assert block_type(model) == q2.GGML_TYPE
    path = write_model(tmp_path / "t.gguf", cfg, export_weights(model), tok, block_type=block_type(model))
    f = GGUFFile(path)
    assert {f.tensors[n].ggml_type for n in f.tensors if not n.endswith("_norm.weight")} == {q2.GGML_TYPE}
    lin = model.blocks[1].mlp.ffn_down
    assert np.array_equal(f.dequantize("blk.1.ffn_down.weight"), lin.effective_weight().detach().numpy())
    eng = Engine.load(path)
    seq = [3, 9, 27, 5, 1]
    ours = eng.logits([seq])[0]
    model.eval()
    with torch.no_grad():
        x = torch.tensor([seq])
        want = model(x, torch.arange(len(seq))[None], torch.ones(len(seq), len(seq), dtype=torch.bool).tril()[None, None])[0, -1]
    assert (ours - want).abs().max() < 1e-4  # the engine runs exactly the trained ternary network


def test_answer_weights_mark_the_assistant_turn():
    from neagari.embedded.toydata.chat import render_chat

    text = render_chat("S", "copy: a b", "a b")
    # offsets of a hand-split: every piece before the answer, then the answer and its end marker
    cut = text.rindex("a b<|im_end|>")
    offsets = [(0, 10), (10, cut), (cut, cut + 1), (cut + 1, cut + 3), (cut + 3, len(text))]
    assert answer_weights(text, offsets, 0.25) == [0.25, 0.25, 1.0, 1.0, 1.0]
    assert answer_weights("12 + 3 = 15\n", [(0, 2), (2, 12)], 0.25) == [1.0, 1.0]  # plain text


def test_pack_examples_layout_and_weights():
    packed = pack_examples([[5, 6, 7], [8, 9], [1, 2, 3, 4]], seq_len=6, sep=0,
                           weights=[[0.1, 1, 1], [1, 0.5], [1, 1, 1, 1]])
    assert packed.tokens.tolist() == [[5, 6, 7, 0, 8, 9, 0], [1, 2, 3, 4, 0, PAD, PAD]]
    assert packed.weights.flatten().tolist() == pytest.approx([0.1, 1, 1, 1, 1, 0.5, 0.5, 1, 1, 1, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="weights"):
        pack_examples([[1, 2]], 4, 0, weights=[[1.0]])


def test_weighted_loss_is_the_weighted_mean_of_token_losses():
    cfg = ModelConfig(n_layer=1, hidden=128, ffn=256, n_head=2, n_kv_head=1, head_dim=64, vocab_size=40,
                      context_length=16, rope_theta=10000.0, tied_embeddings=True)
    model = build_model(cfg, qat=True, seed=0)
    batch = pack_examples([[3, 4, 5, 6], [7, 8]], seq_len=8, sep=0, weights=[[1, 0.2, 1, 0.5], [0.3, 1]])
    x = batch.tokens[:, :-1].clamp(min=0)
    with torch.no_grad():
        logits = model(x, torch.arange(8)[None], torch.ones(8, 8, dtype=torch.bool).tril()[None, None])
        logp = torch.log_softmax(logits, -1)
        y, w = batch.tokens[0, 1:], batch.weights[0, 1:]
        ce = [-logp[0, j, y[j]] for j in range(8) if y[j] != PAD]
        ws = [w[j] for j in range(8) if y[j] != PAD]
        want_w = sum(c * a for c, a in zip(ce, ws)) / sum(ws)
        want_plain = sum(ce) / len(ce)
        assert float(lm_loss(model, batch)) == pytest.approx(float(want_w), rel=1e-5)
        assert float(lm_loss(model, batch, weighted=False)) == pytest.approx(float(want_plain), rel=1e-5)


def test_copy_curriculum_draws_its_first_batches_from_the_copy_rows():
    cfg = ModelConfig(n_layer=1, hidden=128, ffn=256, n_head=2, n_kv_head=1, head_dim=64, vocab_size=40,
                      context_length=16, rope_theta=10000.0, tied_embeddings=True)
    mix = pack_examples([[3, 4, 5, 6]] * 8, seq_len=8, sep=0)
    copy = pack_examples([[7, 7, 7, 7]] * 8, seq_len=8, sep=0)
    seen = []
    model = build_model(cfg, qat=True, seed=0)
    real = model.forward
    model.forward = lambda x, *a: (seen.append(int(x[0, 0])), real(x, *a))[1]
    hist = train(model, mix, mix[:2], TrainConfig(steps=4, batch_size=2, seq_len=8, warmup=1, eval_every=100,
                                                 threads=1, copy_steps=2), copy_rows=copy)
    assert [h["phase"] for h in hist] == ["copy", "copy", "mix", "mix"]
    assert seen[:2] == [7, 7] and seen[2:4] == [3, 3]  # then the last step's evaluation
    with pytest.raises(ValueError, match="copy-drill rows"):
        train(model, mix, mix, TrainConfig(steps=1, copy_steps=1, threads=1))
    with pytest.raises(ValueError, match="corpus has none"):  # an old corpus without drills: clear error
        train(model, mix, mix, TrainConfig(steps=1, copy_steps=1, threads=1), copy_rows=copy[:0])


def test_copy_fraction_keeps_a_share_of_drill_rows_in_every_mixed_batch_and_eval_rows_subsets():
    cfg = ModelConfig(n_layer=1, hidden=128, ffn=256, n_head=2, n_kv_head=1, head_dim=64, vocab_size=40,
                      context_length=16, rope_theta=10000.0, tied_embeddings=True)
    mix = pack_examples([[3, 4, 5, 6]] * 8, seq_len=8, sep=0)
    copy = pack_examples([[7, 7, 7, 7]] * 8, seq_len=8, sep=0)
    heldout = pack_examples([[3, 4, 5, 6]] * 3 + [[9, 9, 9, 9]] * 3, seq_len=8, sep=0)
    seen = []
    model = build_model(cfg, qat=True, seed=0)
    real = model.forward
    model.forward = lambda x, *a: (seen.append(x[:, 0].tolist()), real(x, *a))[1]
    tc = TrainConfig(steps=3, batch_size=4, seq_len=8, warmup=1, eval_every=100, threads=1, copy_steps=1,
                     copy_fraction=0.25, eval_rows=3)
    hist = train(model, mix, heldout, tc, copy_rows=copy)
    assert seen[0] == [7, 7, 7, 7]  # the curriculum step
    assert seen[1] == seen[2] == [7, 3, 3, 3]  # then 1 of 4 rows from the drills, in every batch
    assert seen[3] == [3, 3, 3]  # the evaluation scores the first eval_rows held-out rows only
    model.forward = real

    def nats_per_token(example):  # by hand: the example's next tokens, then the separator (0)
        x = torch.tensor([example])
        S = x.shape[1]
        with torch.no_grad():
            logits = model(x, torch.arange(S)[None], torch.ones(S, S, dtype=torch.bool).tril()[None, None])
        logp = torch.log_softmax(logits[0].double(), -1)
        return float(-logp[torch.arange(S), torch.tensor(example[1:] + [0])].mean())

    first3 = nats_per_token([3, 4, 5, 6])  # the first three held-out rows are this example
    all6 = (first3 + nats_per_token([9, 9, 9, 9])) / 2
    assert abs(first3 - all6) > 1e-3  # scoring all six rows would show
    assert hist[-1]["eval_loss"] == pytest.approx(first3, rel=1e-5)
    with pytest.raises(ValueError, match="copy-drill rows"):
        train(model, mix, mix, TrainConfig(steps=1, copy_fraction=0.5, threads=1))
