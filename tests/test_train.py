"""The QAT layer, export and the trained network = the network the engine runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neagari import q1
from neagari.config import ModelConfig
from neagari.engine import Engine
from neagari.export import write_model
from neagari.fixtures import fixture_tokenizer_metadata
from neagari.gguf_io import GGUFFile
from neagari.train import TrainConfig, TrainLinear, build_model, export_weights, pack_examples, train


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
