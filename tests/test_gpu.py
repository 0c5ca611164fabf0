"""The engine and the search on CUDA against the CPU fp32 reference (skipped without a GPU).

Run on a GPU machine with ``pytest tests/test_gpu.py``; results are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neagari.engine.engine import Engine
from neagari.search.patch import read_patch
from neagari.search import split_probes
from neagari.search.evaluator import GapEvaluator
from neagari.search.proposal import ProposalConfig, Proposer
from neagari.search.runner import Search, SearchConfig

PROBES = Path(__file__).resolve().parents[1] / "resources/probes/smoke.json"

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _prompts(n=9, vocab=400, seed=0):
    rng = np.random.default_rng(seed)
    return [list(map(int, rng.integers(0, vocab, size=int(k)))) for k in rng.integers(2, 40, size=n)]


@pytest.mark.parametrize("dtype, tol", [("fp32", 2e-4), ("bf16", 0.08), ("fp16", 0.01)])
def test_logits_cuda_match_cpu_fp32(fixture_model, dtype, tol):
    """Full-sequence logits on CUDA equal the CPU fp32 reference: to float rounding in fp32,
    within the rounding of the matmul inputs in bf16/fp16 (tolerance relative to the logit spread)."""
    prompts = _prompts()
    cpu = Engine.load(fixture_model)
    gpu = Engine.load(fixture_model, device="cuda", dtype=dtype)
    for ref, got in zip(cpu.logits(prompts, last_only=False), gpu.logits(prompts, last_only=False)):
        assert got.device.type == "cpu" and got.dtype == torch.float32
        err = (got - ref).abs().max().item() / ref.std().item()
        assert err < tol, f"{dtype}: max |Δ| = {err:.2e} logit std"
        if dtype == "fp32":
            assert torch.equal(got.argmax(-1), ref.argmax(-1))


def test_greedy_generation_cuda_equals_cpu(fixture_model):
    prompts = _prompts(n=4, seed=1)
    cpu = Engine.load(fixture_model).generate(prompts, max_new_tokens=24, stop_ids=set())
    gpu = Engine.load(fixture_model, device="cuda").generate(prompts, max_new_tokens=24, stop_ids=set())
    assert gpu == cpu


def test_gap_evaluator_cuda_matches_cpu(fixture_models):
    """Trial gaps of many proposals (speculative batch) and committed gaps agree CPU vs CUDA."""
    model = fixture_models["untied_wide_heads"]
    rng = np.random.default_rng(0)
    prompts = _prompts(n=7, seed=2)
    c, w = rng.integers(0, 400, size=7).tolist(), rng.integers(0, 400, size=7).tolist()
    evs = {}
    for dev in ("cpu", "cuda"):
        eng = Engine.load(model, device=dev)
        moves = [Proposer(eng, ProposalConfig(layers=(0, 1, 2), scale_prob=0.5), seed=3).propose(t) for t in range(16)]
        ev = GapEvaluator(eng, prompts, c, w, search_layers=[0, 1, 2])
        trial = ev.trial(moves).cpu().numpy()
        for m in moves[:8]:
            ev.commit(m)
        evs[dev] = (trial, ev.gaps.cpu().numpy())
    assert np.abs(evs["cpu"][0] - evs["cuda"][0]).max() < 1e-3
    assert np.abs(evs["cpu"][1] - evs["cuda"][1]).max() < 1e-3


@pytest.mark.parametrize("speculate", [1, 8])
def test_search_on_cuda_accepts_the_cpu_moves(fixture_models, tmp_path, speculate):
    """The same seed on CUDA, sequential or speculative, accepts the CPU search's moves."""
    model = fixture_models["tied_gqa"]
    targets, controls = split_probes(PROBES)
    out = {}
    for dev in ("cpu", "cuda"):
        cfg = SearchConfig(iterations=200, fitness="average", lam=1.0, seed=0,
                           speculate=1 if dev == "cpu" else speculate,
                           proposal=ProposalConfig(layers=(0, 1), scale_prob=0.3), checkpoint_every=50)
        d = tmp_path / dev
        s = Search(Engine.load(model, device=dev), model, targets, controls, cfg, d)
        r = s.run(progress=False)
        s.finish(r, d / "patch.json", d / "iterations.parquet", d / "summary.json")
        out[dev] = read_patch(d / "patch.json").moves
    assert len(out["cpu"]) > 5
    assert out["cuda"] == out["cpu"]


def test_training_on_cuda_follows_the_cpu_run():
    """`train(device="cuda")` (embedded.train.device) draws the same batches as on CPU, so the loss
    curves agree to float rounding over a few QAT steps, and the exported model is on CPU again."""
    from neagari.engine.config import ModelConfig
    from neagari.embedded.train import TrainConfig, build_model, export_weights, pack_examples, train

    cfg = ModelConfig(n_layer=2, hidden=128, ffn=256, n_head=2, n_kv_head=1, head_dim=64, vocab_size=64,
                      context_length=32, rope_theta=10000.0, tied_embeddings=False)
    rng = np.random.default_rng(0)
    rows = pack_examples([list(map(int, rng.integers(1, 64, size=int(k)))) for k in rng.integers(5, 30, size=40)],
                         seq_len=32, sep=0)
    runs = {}
    for device in ("cpu", "cuda"):
        model = build_model(cfg, qat=True, seed=0)
        tc = TrainConfig(steps=5, batch_size=4, seq_len=32, warmup=1, eval_every=5, threads=1, device=device)
        runs[device] = [h["train_loss"] for h in train(model, rows, rows[:4], tc)]
        export_weights(model.cpu())
    # the first step sees the same weights and batch: float rounding only; later steps may part a
    # little where Adam's normalised update turns float noise on a tiny gradient into a full step
    assert runs["cuda"][0] == pytest.approx(runs["cpu"][0], rel=1e-4)
    assert runs["cuda"] == pytest.approx(runs["cpu"], rel=2e-2)
