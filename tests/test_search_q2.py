"""The search on Q2_0 tensors: ternary proposals, the fast evaluator against brute force, and a
short search whose patch, applied by apply-patch, gives the bytes the engine held."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHAPES
from neagari.engine import q2
from neagari.engine.engine import Engine
from neagari.engine.fixtures import write_fixture_model
from neagari.engine.gguf_io import GGUFFile
from neagari.search import split_probes
from neagari.search.evaluator import GapEvaluator
from neagari.search.patch import Move, apply_patch_files, read_patch
from neagari.search.proposal import ProposalConfig, Proposer
from neagari.search.runner import Search, SearchConfig
from test_engine_q2 import MIXED

REPO = Path(__file__).resolve().parents[1]
PROBES = REPO / "resources/probes/smoke.json"
ALL_TERNARY = ("negate", "zero_plus", "zero_minus")


@pytest.fixture(scope="module")
def q2_model(tmp_path_factory) -> Path:
    spec = dataclasses.replace(SHAPES["untied_wide_heads"], block_type=q2.GGML_TYPE)
    return write_fixture_model(tmp_path_factory.mktemp("q2search") / "q2.gguf", spec)


def test_proposals_on_ternary_and_binary_tensors(q2_model, fixture_models, tmp_path):
    eng = Engine.load(q2_model)
    default = Proposer(eng, ProposalConfig(layers=(0, 1, 2), scale_prob=0.3), seed=1)
    moves = [default.propose(t) for t in range(200)]
    assert {m.type for m in moves} == {"negate", "scale"} and {m.tensor_type for m in moves} == {"Q2_0"}
    every = Proposer(eng, ProposalConfig(layers=(0, 1, 2), scale_prob=0.3, ternary_moves=ALL_TERNARY), seed=1)
    others = [every.propose(t) for t in range(200)]
    assert {m.type for m in others} == {"scale", *ALL_TERNARY}
    # the same tensors, groups and scale bits: the kind is drawn after everything else
    assert [(m.tensor, m.group, m.bit) for m in others] == [(m.tensor, m.group, m.bit) for m in moves]
    # on Q1_0 tensors the ternary setting changes nothing
    q1_eng = Engine.load(fixture_models["untied_wide_heads"])
    a = [Proposer(q1_eng, ProposalConfig(layers=(0, 1, 2), scale_prob=0.3), seed=1).propose(t) for t in range(50)]
    b = [Proposer(q1_eng, ProposalConfig(layers=(0, 1, 2), scale_prob=0.3, ternary_moves=ALL_TERNARY),
                  seed=1).propose(t) for t in range(50)]
    assert a == b and {m.type for m in a} == {"group", "scale"}
    with pytest.raises(ValueError, match="ternary_moves must be one or more of negate, zero_plus, zero_minus"):
        ProposalConfig(layers=(0,), ternary_moves=("group",))
    assert "ternary_moves" not in ProposalConfig(layers=(0,)).as_dict()
    assert ProposalConfig(layers=(0,), ternary_moves=ALL_TERNARY).as_dict()["ternary_moves"] == ALL_TERNARY


@pytest.mark.parametrize("name", ["q2", "mixed"])
def test_evaluator_equals_brute_force(q2_model, tmp_path, name):
    """Trial and committed gaps under ternary moves (and Q1_0 ones, on the mixed file) equal a
    full forward of the engine with the moves applied."""
    from neagari.engine.config import ModelConfig
    from neagari.engine.export import write_model
    from neagari.engine.fixtures import fixture_tokenizer_metadata, random_weights

    path = q2_model
    if name == "mixed":
        tok = fixture_tokenizer_metadata(512)
        cfg = ModelConfig(n_layer=2, hidden=128, ffn=256, n_head=4, n_kv_head=2, head_dim=32,
                          vocab_size=len(tok["tokenizer.ggml.tokens"]), tied_embeddings=False)
        path = write_model(tmp_path / "mixed.gguf", cfg, random_weights(cfg, seed=7), tok, tensor_types=MIXED)
    eng = Engine.load(path)
    layers = tuple(range(eng.cfg.n_layer))
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(0, 400, size=int(n))) for n in rng.integers(2, 15, size=7)]
    c, w = rng.integers(0, 400, size=7).tolist(), rng.integers(0, 400, size=7).tolist()
    ev = GapEvaluator(eng, prompts, c, w, search_layers=layers)
    proposer = Proposer(eng, ProposalConfig(layers=layers, scale_prob=0.3, ternary_moves=ALL_TERNARY), seed=3)
    moves = [proposer.propose(t) for t in range(16)]
    if name == "mixed":
        assert {m.tensor_type for m in moves} == {"Q1_0", "Q2_0"}

    def brute():
        lg = torch.stack(eng.logits(prompts))
        return (lg[range(7), c] - lg[range(7), w]).numpy()

    trial = ev.trial(moves).numpy()
    for k, m in enumerate(moves):
        eng.move(m.tensor, m.group, m.type, m.bit)
        assert np.abs(trial[k] - brute()).max() < 1e-4, m.describe()
        eng.move(m.tensor, m.group, m.type, m.bit)
    for m in moves[:8]:
        ev.commit(m)
    assert np.abs(ev.gaps.numpy() - brute()).max() < 1e-4
    wrong = Move(0, "ffn_up.weight", 0, "scale", 5, "Q1_0" if eng.linear("blk.0.ffn_up.weight").fmt is q2 else "Q2_0")
    with pytest.raises(ValueError, match="not Q"):
        ev.trial([wrong])


def test_search_patch_applies_to_the_bytes_the_engine_held(q2_model, tmp_path, caplog):
    targets, controls = split_probes(PROBES)
    cfg = SearchConfig(iterations=120, fitness="average", lam=1.0, seed=0, checkpoint_every=25,
                       proposal=ProposalConfig(layers=(0, 1, 2), scale_prob=0.3, ternary_moves=ALL_TERNARY))
    out = tmp_path / "run"
    eng = Engine.load(q2_model)
    s = Search(eng, q2_model, targets, controls, cfg, out)
    r = s.run(progress=False)
    assert r.accepted >= 3 and {m.tensor_type for m in r.moves} == {"Q2_0"}
    # a second search on the same directory resumes from the checkpoint: the moves replay
    with caplog.at_level("INFO", logger="neagari.search.runner"):
        again = Search(Engine.load(q2_model), q2_model, targets, controls, cfg, out).run(progress=False)
    assert f"resumed at iteration 120 with {r.accepted} accepted moves" in caplog.text
    assert again.moves == r.moves
    s.finish(r, out / "patch.json", out / "iterations.parquet", out / "summary.json")
    patch = read_patch(out / "patch.json")
    assert patch.moves == r.moves and patch.search_config["proposal"]["ternary_moves"] == list(ALL_TERNARY)
    sha = apply_patch_files(q2_model, tmp_path / "patched.gguf", [out / "patch.json"])
    assert sha == json.loads((out / "summary.json").read_text())["patched_sha256"]
    patched = GGUFFile(tmp_path / "patched.gguf")
    for name in {m.tensor for m in r.moves}:
        assert np.array_equal(eng.linear(name).raw.numpy(), patched.raw(name)), name
    touched = {m.tensor for m in r.moves}
    base = GGUFFile(q2_model)
    for name, rec in base.tensors.items():
        if name not in touched:
            assert np.array_equal(base.raw(name), patched.raw(name)), name


def test_search_command_on_a_q2_model(q2_model, tmp_path, capsys):
    from neagari.cli import main

    out = tmp_path / "cli"
    assert main(["search", str(q2_model), "--probes", str(PROBES), "--out", str(out), "--iterations", "60",
                 "--layers", "1", "2", "--scale-prob", "0.2", "--ternary-moves", "zero_plus", "zero_minus",
                 "--quiet"]) == 0
    flips = json.loads((out / "patch.json").read_text())["flips"]
    assert flips and {f["tensor_type"] for f in flips} == {"Q2_0"}
    assert {f["type"] for f in flips} <= {"zero_plus", "zero_minus", "scale"}
    patched = tmp_path / "p.gguf"
    assert main(["apply-patch", "--base", str(q2_model), "--out", str(patched), str(out / "patch.json")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["proposal"]["ternary_moves"] == ["zero_plus", "zero_minus"]
    assert GGUFFile(patched).sha256() == summary["patched_sha256"]
    capsys.readouterr()
