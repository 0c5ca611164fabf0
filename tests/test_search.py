"""The search: fitness functions by hand, the fast evaluator against brute force, determinism,
speculation identity, kill-and-resume identity, and the null-model randomization."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from neagari.engine import q1
from neagari.engine.engine import Engine
from neagari.engine.gguf_io import GGUFFile
from neagari.search.patch import read_patch
from neagari.search import split_probes
from neagari.search.evaluator import GapEvaluator, length_groups
from neagari.search.fitness import Fitness
from neagari.search.null import randomize_mlp_signs
from neagari.search.proposal import ProposalConfig, Proposer
from neagari.search.runner import Search, SearchConfig
from test_patch_moves import brute_force_bytes

REPO = Path(__file__).resolve().parents[1]
PROBES = REPO / "resources/probes/smoke.json"


# ---------------------------------------------------------------------------- fitness by hand

def test_average_fitness_hand_computed():
    f = Fitness("average", base_t=[-1.0, 0.5], base_c=[2.0, 1.0], lam=1.5)
    # targets move by +0.2 and +0.4 (mean +0.3); control 1 drops 0.5 below baseline, control 2 rises
    assert f.value([-0.8, 0.9], [1.5, 1.2]) == pytest.approx(0.3 - 1.5 * (0.5 + 0.0) / 2)
    v = f.judge([-1.0, 0.5], [2.0, 1.0], [-0.8, 0.9], [1.5, 1.2])
    assert not v.accept and v.value == pytest.approx(-0.075)  # 0.3 − 0.375 < 0
    assert f.judge([-1.0, 0.5], [2.0, 1.0], [-0.8, 0.9], [1.9, 1.2]).accept  # 0.3 − 0.075 > 0


def test_borderline_saturating_fitness_hand_computed():
    f = Fitness("borderline_saturating", base_t=[-0.5, 0.2, -2.0], base_c=[1.0, 0.3], lam=2.0)
    t, c = np.array([0.4, -0.1, -2.0]), np.array([1.0, -0.2])
    expected = 0.4 / 0.5 + (-0.1) / 0.2 + (-2.0) / 2.1 + 0.5 * (1 - 1) - 2.0 * 1
    assert f.value(t, c) == pytest.approx(expected)


def test_focused_fitness_is_lexicographic():
    f = Fitness("focused", base_t=[-3.0, -0.2, 1.0], base_c=[0.1, 2.0], epsilon=0.5)
    cur_t, cur_c = np.array([-3.0, -0.2, 1.0]), np.array([0.1, 2.0])
    assert f.focus(cur_t) == 1  # the wrong target nearest zero
    assert f.judge(cur_t, cur_c, [-2.0, -0.25, 1.0], cur_c).accept is False  # focus got worse
    assert f.judge(cur_t, cur_c, [-3.5, -0.1, 0.0], [-0.39, 1.6]).accept  # controls within 0.5 slack
    assert not f.judge(cur_t, cur_c, [-3.5, -0.1, 0.0], [-0.41, 1.6]).accept  # control 1 beyond slack
    new_t = np.array([-3.0, 0.05, 1.0])
    assert f.judge(cur_t, cur_c, new_t, cur_c).accept
    assert f.accepted(cur_t, new_t) == [1] and f.focus(new_t) == 0
    # a crossed target must stay positive
    assert not f.judge(new_t, cur_c, [-2.9, -0.01, 1.0], cur_c).accept
    assert f.judge(new_t, cur_c, [-2.9, 0.01, 1.0], cur_c).accept


def test_focused_proportional_protects_small_margins():
    fixed = Fitness("focused", base_t=[-1.0], base_c=[0.005, 3.0], epsilon=0.5)
    prop = Fitness("focused_proportional", base_t=[-1.0], base_c=[0.005, 3.0], slack_ratio=0.5)
    cur_t, cur_c, new_t = [-1.0], [0.005, 3.0], [-0.5]
    broken = [-0.2, 3.0]  # the paper's failure: a +0.005 control pushed below zero
    assert fixed.judge(cur_t, cur_c, new_t, broken).accept
    assert not prop.judge(cur_t, cur_c, new_t, broken).accept
    assert prop.judge(cur_t, cur_c, new_t, [0.003, 1.6]).accept  # within 50% of each baseline
    assert not prop.judge(cur_t, cur_c, new_t, [0.003, 1.4]).accept


# ---------------------------------------------------------------------------- evaluator

def test_evaluator_equals_brute_force(fixture_models):
    eng = Engine.load(fixture_models["untied_wide_heads"])
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(0, 400, size=int(n))) for n in rng.integers(2, 15, size=7)]
    c, w = rng.integers(0, 400, size=7).tolist(), rng.integers(0, 400, size=7).tolist()
    ev = GapEvaluator(eng, prompts, c, w, search_layers=[0, 1, 2])
    assert len(ev.groups) > 1  # prompts of 2-14 tokens: several length groups, merged back in order
    proposer = Proposer(eng, ProposalConfig(layers=(0, 1, 2), scale_prob=0.5), seed=3)
    moves = [proposer.propose(t) for t in range(12)]

    def brute():
        lg = torch.stack(eng.logits(prompts))
        return (lg[range(7), c] - lg[range(7), w]).numpy()

    trial = ev.trial(moves).numpy()
    for k, m in enumerate(moves):
        eng.flip_group(m.tensor, m.group) if m.type == "group" else eng.flip_scale_bit(m.tensor, m.group, m.bit)
        assert np.abs(trial[k] - brute()).max() < 1e-4
        eng.flip_group(m.tensor, m.group) if m.type == "group" else eng.flip_scale_bit(m.tensor, m.group, m.bit)
    for m in moves[:6]:
        ev.commit(m)
    assert np.abs(ev.gaps.numpy() - brute()).max() < 1e-4


def _mv(layer, proj, group, bit=None):
    from neagari.search.patch import Move

    return Move(layer, f"{proj}.weight", group, "group" if bit is None else "scale", bit)


# untied_wide_heads: hidden 128, ffn 384, so ffn_gate / ffn_up group u is MLP unit u (one group a
# row) and ffn_down group g is hidden row g // 3, ffn columns (g % 3) * 128 onwards.
REPEATING_MOVES = [
    _mv(1, "ffn_gate", 5), _mv(1, "ffn_up", 5),  # gate then up on one unit: up must see the new gate
    _mv(1, "ffn_up", 5, 7), _mv(1, "ffn_gate", 5, 6),  # scale bits of the same unit, both matrices
    _mv(1, "ffn_gate", 5),  # the same group again: undoes the first gate move
    _mv(1, "ffn_down", 0), _mv(1, "ffn_down", 0, 9),  # the down row that reads unit 5
    _mv(0, "ffn_up", 0), _mv(0, "ffn_gate", 0, 4), _mv(0, "ffn_gate", 0),  # up then gate on unit 0
    _mv(0, "ffn_gate", 0, 5), _mv(0, "ffn_gate", 0, 5),  # a scale bit twice: cancels
    _mv(2, "ffn_gate", 9), _mv(2, "ffn_up", 9), _mv(2, "ffn_up", 9),  # the top layer
    _mv(2, "ffn_down", 3), _mv(2, "ffn_gate", 9, 8), _mv(2, "ffn_up", 9, 8),
    _mv(1, "ffn_up", 5), _mv(1, "ffn_gate", 5), _mv(1, "ffn_up", 5, 7),  # back to layer 1's unit 5
    _mv(0, "ffn_down", 2), _mv(0, "ffn_up", 0), _mv(1, "ffn_gate", 5, 6),
]


def test_evaluator_commits_of_repeated_units_equal_fresh_forward(fixture_models, tmp_path):
    """A long run of committed moves that revisit one MLP unit through its gate, up and down
    matrices, repeat groups and scale bits, and span every layer: after each commit the cached
    evaluator's gaps equal a full forward of a fresh engine loaded from the base bytes with the
    same moves XOR-ed in (brute force, Engine.logits), within 1e-4."""
    model = fixture_models["untied_wide_heads"]
    eng = Engine.load(model)
    rng = np.random.default_rng(5)
    prompts = [list(rng.integers(0, 400, size=int(n))) for n in rng.integers(2, 15, size=6)]
    c, w = rng.integers(0, 400, size=6).tolist(), rng.integers(0, 400, size=6).tolist()
    ev = GapEvaluator(eng, prompts, c, w, search_layers=[0, 1, 2])
    prev = ev.gaps.numpy().copy()
    # checked after: gate then up on unit 5, its scale bits, the repeat, layer 0's unit, the
    # cancelled scale bit, the top layer, and the end (each check loads an engine: ~1 s)
    checks = {1, 4, 6, 9, 11, 14, 17, 20, len(REPEATING_MOVES) - 1}
    for k, m in enumerate(REPEATING_MOVES):
        gaps = ev.commit(m).numpy().copy()
        if k not in (11,):  # move 11 repeats move 10's scale bit, so the gaps return to move 9's
            assert np.abs(gaps - prev).max() > 1e-6, f"move {k} ({m.describe()}) changed nothing"
        prev = gaps
        if k not in checks:
            continue
        path = tmp_path / f"after{k}.gguf"
        path.write_bytes(brute_force_bytes(model, REPEATING_MOVES[: k + 1]))
        lg = torch.stack(Engine.load(path).logits(prompts))
        ref = (lg[range(6), c] - lg[range(6), w]).numpy()
        path.unlink()
        err = np.abs(gaps - ref).max()
        assert err < 1e-4, f"after move {k} ({m.describe()}): evaluator off by {err:.3g}"
    assert np.abs(gaps - ev.rebuild().numpy()).max() < 1e-4


def test_length_groups_cut_where_padding_is_saved():
    # one batch pads 5 probes to 50 (250 slots); 10,10,10 | 50,50 needs 130
    assert length_groups([10, 10, 10, 50, 50], 4) == [[0, 1, 2], [3, 4]]
    assert length_groups([10, 50, 10, 50, 10], 1) == [[0, 1, 2, 3, 4]]
    assert length_groups([10, 11], 4) == [[0, 1]]  # 21 vs 22 slots: not worth a second batch
    assert length_groups([5, 3, 5, 3], 4) == [[1, 3], [0, 2]]  # sorted by length, ties by index
    assert length_groups([2, 2, 2, 20, 30, 30], 2) == [[0, 1, 2], [3, 4, 5]]  # 6 + 90 beats 80 + 60


def test_commit_after_its_single_trial_is_a_fresh_commit_bit_for_bit(fixture_models):
    """A commit reuses the pass of the move's single trial just before it: the gaps and every
    cache equal, bit for bit, those of an evaluator that commits the same moves without trials;
    a trial of another move, or a speculative batch, is not taken for the commit's pass."""
    model = fixture_models["untied_wide_heads"]
    rng = np.random.default_rng(7)
    prompts = [list(rng.integers(0, 400, size=int(n))) for n in rng.integers(2, 15, size=6)]
    c, w = rng.integers(0, 400, size=6).tolist(), rng.integers(0, 400, size=6).tolist()
    tried = GapEvaluator(Engine.load(model), prompts, c, w, search_layers=[0, 1, 2])
    fresh = GapEvaluator(Engine.load(model), prompts, c, w, search_layers=[0, 1, 2])
    for k, m in enumerate(REPEATING_MOVES):
        if k % 3 == 0:
            gaps = tried.trial([m])[0].clone()
        elif k % 3 == 1:  # a trial of another move: its pass must not stand in for this commit
            tried.trial([REPEATING_MOVES[(k + 5) % len(REPEATING_MOVES)]])
        else:
            tried.trial([m, REPEATING_MOVES[(k + 1) % len(REPEATING_MOVES)]])
        tried.commit(m)
        fresh.commit(m)
        if k % 3 == 0:
            assert torch.equal(gaps, tried.gaps)
        assert torch.equal(tried.gaps, fresh.gaps), f"move {k}"
        for batch, ref in zip(tried.batches, fresh.batches, strict=True):
            for layer, trace in ref.cache.items():
                for name in ("n", "gate", "up", "act", "out"):
                    assert torch.equal(getattr(batch.cache[layer], name), getattr(trace, name)), (k, layer, name)


# ---------------------------------------------------------------------------- the loop

def _run(model, out, speculate=1, iterations=150, fitness="average", seed=0):
    eng = Engine.load(model)
    targets, controls = split_probes(PROBES)
    cfg = SearchConfig(iterations=iterations, fitness=fitness, lam=1.0, seed=seed, speculate=speculate,
                       proposal=ProposalConfig(layers=(0, 1), scale_prob=0.3), checkpoint_every=25)
    s = Search(eng, model, targets, controls, cfg, out)
    r = s.run(progress=False)
    s.finish(r, out / "patch.json", out / "iterations.parquet", out / "summary.json")
    return read_patch(out / "patch.json").moves, json.loads((out / "summary.json").read_text())


def test_search_is_deterministic_and_speculation_exact(fixture_models, tmp_path):
    model = fixture_models["tied_gqa"]
    a, sa = _run(model, tmp_path / "a")
    b, _ = _run(model, tmp_path / "b")
    c, sc = _run(model, tmp_path / "c", speculate=6)
    assert a == b and len(a) > 5
    assert a == c
    assert sa["accepted"] == sc["accepted"] and sa["iterations_run"] == sc["iterations_run"]
    d, _ = _run(model, tmp_path / "d", seed=1)
    assert d != a


def test_patch_replays_to_the_search_gaps(fixture_models, tmp_path):
    """The patched file, scored from scratch, shows the gaps the search recorded."""
    from neagari.search.patch import apply_patch_files
    from neagari.search.probes import score_probes

    model = fixture_models["tied_gqa"]
    moves, summary = _run(model, tmp_path / "a", fitness="focused")
    apply_patch_files(model, tmp_path / "p.gguf", [tmp_path / "a/patch.json"])
    targets, controls = split_probes(PROBES)
    table = score_probes(Engine.load(tmp_path / "p.gguf"), targets + controls)
    assert np.allclose(table["gap"].to_numpy(), summary["final_gaps"], atol=1e-4)


def _cli(model, out, iterations, *extra):
    return [sys.executable, "-m", "neagari.cli", "search", str(model), "--probes", str(PROBES), "--out", str(out),
            "--iterations", str(iterations), "--layers", "0", "1", "--min-rate", "0", "--checkpoint-every", "40",
            "--scale-prob", "0.3", "--quiet", "--label", "run", "--threads", "1", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_search_resumes_to_the_same_patch(fixture_models, tmp_path, sig):
    model = fixture_models["mha_untied"]
    n = 1200
    ref = tmp_path / "ref"
    subprocess.run(_cli(model, ref, n), check=True, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(model, out, n), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = out / ".checkpoint/checkpoint.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ck.exists() and json.loads(ck.read_text())["next_iteration"] >= 200:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    assert rc != 0 and not (out / "patch.json").exists()
    at = json.loads(ck.read_text())["next_iteration"]
    assert 200 <= at < n
    subprocess.run(_cli(model, out, n), check=True, capture_output=True)
    assert (out / "patch.json").read_bytes() == (ref / "patch.json").read_bytes()
    assert not (out / ".checkpoint").exists()


# ---------------------------------------------------------------------------- nulls

def test_randomized_mlp_signs(fixture_models, tmp_path):
    base = fixture_models["tied_gqa"]
    randomize_mlp_signs(base, tmp_path / "null.gguf", seed=0)
    a, b = GGUFFile(base), GGUFFile(tmp_path / "null.gguf")
    flipped = total = 0
    for name, rec in a.tensors.items():
        ra, rb = a.raw(name).reshape(-1, 18) if rec.ggml_type == q1.GGML_TYPE_Q1_0 else a.raw(name), \
            b.raw(name).reshape(-1, 18) if rec.ggml_type == q1.GGML_TYPE_Q1_0 else b.raw(name)
        if rec.ggml_type == q1.GGML_TYPE_Q1_0 and name.split(".")[-2] in ("ffn_gate", "ffn_up", "ffn_down"):
            assert np.array_equal(ra[:, :2], rb[:, :2])  # scales kept
            diff = np.unpackbits(ra[:, 2:] ^ rb[:, 2:])
            flipped += int(diff.sum())
            total += diff.size
        else:
            assert np.array_equal(ra, rb), name  # everything else byte-identical
    # each bit flipped with probability 1/2: within 5 standard deviations
    assert abs(flipped - total / 2) < 5 * np.sqrt(total / 4)
    assert randomize_mlp_signs(base, tmp_path / "again.gguf", seed=0) == GGUFFile(tmp_path / "null.gguf").sha256()
