"""Fitness functions at their boundaries (PAPER.md §4, §8, §9.5): focused judges on an unchanged
focus target, a control exactly on its floor and controls whose baseline gap is negative; the
paper's borderline beside ours; the fixed focus order against the dynamic one; the log-barrier on
the controls; and the search loop once every target has crossed (scripted gaps), through a resume.
Every expected value is worked out by hand in the comments, from the definitions in
neagari.search.fitness's docstring."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from snakemake.utils import validate

from neagari.engine.engine import Engine
from neagari.search import runner, split_probes
from neagari.search.fitness import FITNESS_NAMES, Fitness
from neagari.search.proposal import ProposalConfig
from neagari.search.runner import Search, SearchConfig

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "resources/probes/smoke.json"


@pytest.mark.parametrize("name", ["focused", "focused_proportional"])
def test_focused_rejects_an_unchanged_focus_target(name):
    # base targets [-1.0, -0.5]: the focus p* is target 1 (wrong, nearest zero). Acceptance needs
    # Δ_p* to *improve* strictly: new -0.5 vs current -0.5 is no improvement, even though every
    # control is untouched (0 >= floor) and nothing else moved.
    f = Fitness(name, base_t=[-1.0, -0.5], base_c=[1.0, 2.0], epsilon=0.5, slack_ratio=0.5)
    cur_t, cur_c = np.array([-1.0, -0.5]), np.array([1.0, 2.0])
    assert f.focus(cur_t) == 1
    v = f.judge(cur_t, cur_c, cur_t.copy(), cur_c.copy())
    assert v.accept is False
    # the closest comparison is the focus itself, exactly on its threshold: margin 0
    assert v.margin == 0.0 and v.value == -0.5
    # another target improving does not count: only p* is judged (-1.0 -> 0.0, p* still -0.5)
    assert f.judge(cur_t, cur_c, [0.0, -0.5], cur_c).accept is False
    # the smallest strict improvement is accepted: -0.5 -> -0.25 (exact in binary)
    v = f.judge(cur_t, cur_c, [-1.0, -0.25], cur_c)
    assert v.accept is True and v.margin == pytest.approx(0.25)


def test_focused_control_exactly_on_its_floor_is_accepted():
    # fixed ε = 0.5: floors are b_c - 0.5 = [0.5, 1.5]. Δ_c = floor exactly passes (>=), a hair
    # below fails.
    f = Fitness("focused", base_t=[-1.0], base_c=[1.0, 2.0], epsilon=0.5)
    cur_t, cur_c, new_t = [-1.0], [1.0, 2.0], [-0.5]
    assert f.judge(cur_t, cur_c, new_t, [0.5, 1.5]).accept is True
    assert f.judge(cur_t, cur_c, new_t, [0.5, 1.4999]).accept is False


def test_proportional_slack_of_a_negative_baseline_uses_its_magnitude():
    # ρ = 0.5, baselines [-2.0, 4.0, 0.0]: slack = ρ·|b_c| = [1.0, 2.0, 0.0] (never negative), so
    # floors b_c - slack = [-2 - 1, 4 - 2, 0 - 0] = [-3.0, 2.0, 0.0]. (Using ρ·b_c instead would give a
    # slack of -1.0 and a floor of -1.0, *above* the control's own baseline.)
    f = Fitness("focused_proportional", base_t=[-1.0], base_c=[-2.0, 4.0, 0.0], slack_ratio=0.5)
    assert f.slack().tolist() == [1.0, 2.0, 0.0]
    cur_t, cur_c, new_t = [-1.0], [-2.0, 4.0, 0.0], [-0.5]
    # the wrong-at-baseline control may sink to its floor -3.0 (exactly) ...
    assert f.judge(cur_t, cur_c, new_t, [-3.0, 4.0, 0.0]).accept is True
    assert f.judge(cur_t, cur_c, new_t, [-2.5, 4.0, 0.0]).accept is True
    # ... but not below it
    assert f.judge(cur_t, cur_c, new_t, [-3.25, 4.0, 0.0]).accept is False
    # an unchanged negative control is within its floor: -2.0 - (-3.0) = 1.0 >= 0; the margin is the
    # smallest |check|: focus +0.5, controls [1.0, 2.0, 0.0] -> 0.0 (the zero-baseline control)
    v = f.judge(cur_t, cur_c, new_t, cur_c)
    assert v.accept is True and v.margin == 0.0
    # a zero-baseline control has zero slack: any drop below 0 is refused
    assert f.judge(cur_t, cur_c, new_t, [-2.0, 4.0, -0.125]).accept is False


def test_fixed_slack_ignores_the_baseline_sign():
    # focused: floor = b_c - ε = [-2.0 - 0.5, 4.0 - 0.5] = [-2.5, 3.5] whatever the sign of b_c
    f = Fitness("focused", base_t=[-1.0], base_c=[-2.0, 4.0], epsilon=0.5)
    assert f.slack().tolist() == [0.5, 0.5]
    cur_t, cur_c, new_t = [-1.0], [-2.0, 4.0], [-0.5]
    assert f.judge(cur_t, cur_c, new_t, [-2.5, 3.5]).accept is True
    assert f.judge(cur_t, cur_c, new_t, [-2.75, 3.5]).accept is False


# ---------------------------------------------------------------------------- borderline


def test_borderline_is_the_clipped_baseline_weighted_gain():
    # b = [-0.5, 0.2, -2.0], b_c = [1.0, 0.3], λ = 2; candidate Δ = [0.4, -0.1, -1.0], Δ_c = [1.0, -0.2].
    # gains max(0, Δ - b) / (0.1 + |b|): (0.4 + 0.5) / 0.6 = 1.5; -0.1 - 0.2 < 0 -> 0;
    # (-1.0 + 2.0) / 2.1 = 0.476190...; mean (1.5 + 0 + 0.476190) / 3 = 0.658730...
    # fixes 1 (target 0), breaks 1 (target 1), control breaks 1 (0.3 -> -0.2): +0.5 - 0.5 - 2.0
    f = Fitness("borderline", base_t=[-0.5, 0.2, -2.0], base_c=[1.0, 0.3], lam=2.0)
    t, c = [0.4, -0.1, -1.0], [1.0, -0.2]
    assert f.value(t, c) == pytest.approx(0.6587301587 - 2.0)
    # ours on the same gaps: 0.4/0.5 - 0.1/0.2 - 1.0/1.1 + 0.5 - 0.5 - 2.0 = 0.8 - 0.5 - 0.909091 - 2.0
    ours = Fitness("borderline_saturating", base_t=[-0.5, 0.2, -2.0], base_c=[1.0, 0.3], lam=2.0)
    assert ours.value(t, c) == pytest.approx(-2.6090909091)
    # at baseline the paper's form is 0, and a target sinking below its baseline costs nothing
    base_t, base_c = [-0.5, 0.2, -2.0], [1.0, 0.3]
    assert f.value(base_t, base_c) == 0.0
    assert f.value([-0.5, 0.2, -3.0], base_c) == 0.0
    assert f.judge(base_t, base_c, [-0.5, 0.2, -3.0], base_c).accept is False
    assert ours.judge(base_t, base_c, [-0.5, 0.2, -3.0], base_c).accept is False
    # the weight is the baseline's: +0.25 on target 0 is 0.25 / 0.6 / 3 = 0.138888...
    v = f.judge(base_t, base_c, [-0.25, 0.2, -2.0], base_c)
    assert v.accept is True and v.value == pytest.approx(0.1388888889)


# ---------------------------------------------------------------------------- focus order


def test_fixed_focus_order_is_set_at_baseline():
    # b = [-0.3, -1.0, -0.3, 0.5]: wrong at baseline 0, 1, 2 with |b| 0.3, 1.0, 0.3; the tie 0/2 goes to
    # the lower index: fixed order (0, 2, 1). Target 3 (right at baseline) is never a focus.
    base_t, base_c = [-0.3, -1.0, -0.3, 0.5], [1.0]
    fixed = Fitness("focused", base_t=base_t, base_c=base_c)
    dynamic = Fitness("focused", base_t=base_t, base_c=base_c, focus_order="dynamic")
    assert fixed.order == (0, 2, 1)
    # after some moves target 1 is nearest zero: dynamic re-ranks onto it, fixed stays on 0
    cur_t, cur_c = np.array([-0.8, -0.1, -0.3, 0.5]), np.array([1.0])
    assert fixed.focus(cur_t) == 0 and dynamic.focus(cur_t) == 1
    only_1 = [-0.8, -0.05, -0.3, 0.5]  # target 1 improves, target 0 does not
    only_0 = [-0.7, -0.1, -0.3, 0.5]
    assert fixed.judge(cur_t, cur_c, only_1, cur_c).accept is False
    assert dynamic.judge(cur_t, cur_c, only_1, cur_c).accept is True
    assert fixed.judge(cur_t, cur_c, only_0, cur_c).accept is True
    assert dynamic.judge(cur_t, cur_c, only_0, cur_c).accept is False
    # target 0 crosses: the fixed focus moves to 2 (next in the baseline order), although 1 is nearer
    new_t = np.array([0.1, -0.1, -0.3, 0.5])
    assert fixed.accepted(cur_t, new_t) == [0] and fixed.crossed == {0}
    assert fixed.focus(new_t) == 2 and not fixed.done(new_t)
    # target 3 dropping below zero does not make it a fixed focus (dynamic would take it: -0.05 > -0.1)
    dropped = np.array([0.1, -0.1, -0.3, -0.05])
    assert fixed.focus(dropped) == 2
    dynamic.crossed = {0}
    assert dynamic.focus(dropped) == 3
    # a target that crossed as a side effect is still the focus until an accepted move improves it
    side = np.array([0.1, -0.1, 0.2, 0.5])
    assert fixed.focus(side) == 2
    assert fixed.judge(side, cur_c, [0.1, -0.1, 0.25, 0.5], cur_c).accept is True
    assert fixed.accepted(side, np.array([0.1, -0.1, 0.25, 0.5])) == [2]
    assert fixed.focus(side) == 1
    fixed.accepted(side, np.array([0.1, 0.05, 0.25, 0.5]))
    assert fixed.crossed == {0, 1, 2} and fixed.done(side) and fixed.focus(side) is None
    # done: every proposal is refused, however good
    assert fixed.judge(side, cur_c, [5.0, 5.0, 5.0, 5.0], [9.0]).accept is False


def test_unknown_focus_order_is_refused():
    with pytest.raises(ValueError, match="unknown focus order 'nearest'"):
        Fitness("focused", base_t=[-1.0], base_c=[], focus_order="nearest")


# ---------------------------------------------------------------------------- barrier


def test_barrier_refuses_a_control_approaching_zero():
    # μ = 0.1, ε = 0.5; controls b_c = [0.05, 2.0, -0.5]: C+ = {0, 1} under the barrier, control 2
    # (wrong at baseline) held at b_c - ε = -1.0. Focus: the only target, -1.0.
    f = Fitness("focused_barrier", base_t=[-1.0], base_c=[0.05, 2.0, -0.5], barrier_mu=0.1, epsilon=0.5)
    fixed = Fitness("focused", base_t=[-1.0], base_c=[0.05, 2.0, -0.5], epsilon=0.5)
    cur_t, cur_c, new_t = [-1.0], [0.05, 2.0, -0.5], [-0.9]  # a focus gain of 0.1
    # Φ' - Φ = 0.1 + 0.1·ln(Δ'_0 / 0.05): the break-even is Δ'_0 = 0.05·e^-1 = 0.018394
    # 0.0184: ln(0.368) = -0.999672 -> +0.0000328, accepted; 0.0183: ln(0.366) = -1.005122 -> -0.000512
    assert f.judge(cur_t, cur_c, new_t, [0.0184, 2.0, -0.5]).accept is True
    assert f.judge(cur_t, cur_c, new_t, [0.0183, 2.0, -0.5]).accept is False
    # 0.05 -> 0.01: 0.1 + 0.1·ln(0.2) = 0.1 - 0.160944 < 0, refused; the fixed slack lets it through
    # (0.01 >= 0.05 - 0.5), and would let it cross zero too (-0.2 >= -0.45)
    assert f.judge(cur_t, cur_c, new_t, [0.01, 2.0, -0.5]).accept is False
    assert fixed.judge(cur_t, cur_c, new_t, [0.01, 2.0, -0.5]).accept is True
    assert fixed.judge(cur_t, cur_c, new_t, [-0.2, 2.0, -0.5]).accept is True
    # the same absolute loss, 0.04, far from zero is nearly free: 0.1 + 0.1·ln(1.96 / 2.0) = 0.1 - 0.00202
    assert f.judge(cur_t, cur_c, new_t, [0.05, 1.96, -0.5]).accept is True
    # a right control at or below zero is refused whatever the gain
    assert f.judge(cur_t, cur_c, [5.0], [0.0, 2.0, -0.5]).accept is False
    assert f.judge(cur_t, cur_c, [5.0], [-0.001, 9.0, -0.5]).accept is False
    # the wrong-at-baseline control: down to its floor -1.0 exactly, not below
    assert f.judge(cur_t, cur_c, new_t, [0.05, 2.0, -1.0]).accept is True
    assert f.judge(cur_t, cur_c, new_t, [0.05, 2.0, -1.25]).accept is False
    # lexicographic: the focus must gain, even if the controls gain a lot (Φ' - Φ = 0.1·ln 2 > 0)
    assert f.judge(cur_t, cur_c, cur_t, [0.1, 2.0, -0.5]).accept is False
    # a control gaining pays for another's loss: 0.1 + 0.1·(ln(0.02/0.05) + ln(4.0/2.0))
    # = 0.1 + 0.1·(-0.916291 + 0.693147) = 0.0776856 >= 0; without the gain 0.1 - 0.0916291 = 0.0083709
    v = f.judge(cur_t, cur_c, new_t, [0.02, 4.0, -0.5])
    assert v.accept is True and v.value == pytest.approx(-0.9)
    # margin: the smallest |check|: gain 0.1, C+ 0.02 and 4.0, floor 0.5, Φ' - Φ 0.0776856 -> 0.02
    assert v.margin == pytest.approx(0.02)


def test_barrier_with_mu_zero_only_keeps_right_controls_positive():
    f = Fitness("focused_barrier", base_t=[-1.0], base_c=[0.05], barrier_mu=0.0)
    assert f.judge([-1.0], [0.05], [-0.9], [1e-9]).accept is True
    assert f.judge([-1.0], [0.05], [-0.9], [0.0]).accept is False
    with pytest.raises(ValueError, match="barrier_mu must be >= 0"):
        Fitness("focused_barrier", base_t=[-1.0], base_c=[0.05], barrier_mu=-0.1)


# ---------------------------------------------------------------------------- the search after all targets crossed


class _ScriptedGaps:
    """Stands in for GapEvaluator: the gaps are the baseline plus the delta of every committed move,
    each move's delta given by the test (zero for a move it names none for)."""

    def __init__(self, base):
        self.state = np.asarray(base, np.float64)
        self.deltas: dict = {}

    def _delta(self, m):
        return self.deltas.get(m, np.zeros_like(self.state))

    @property
    def gaps(self):
        return torch.tensor(self.state)

    def trial(self, moves):
        return torch.tensor(np.stack([self.state + self._delta(m) for m in moves]))

    def commit(self, m):
        self.state = self.state + self._delta(m)
        return self.gaps


def _probe_file(path) -> Path:
    """Two targets and one control of the smoke probes (only their count matters here: the gaps are
    scripted)."""
    doc = json.loads(SMOKE.read_text())
    doc["probes"] = {"target": doc["probes"]["target"][:2], "promoted_controls": doc["probes"]["promoted_controls"][:1]}
    path.write_text(json.dumps(doc))
    return path


def _scripted_search(model, out, probes, base, script, monkeypatch, **cfg):
    """A search whose gaps follow ``script`` (one delta per iteration, by the move proposed then)."""
    fake = _ScriptedGaps(base)
    monkeypatch.setattr(runner, "GapEvaluator", lambda *a, **k: fake)
    targets, controls = split_probes(probes)
    s = Search(Engine.load(model), model, targets, controls,
               SearchConfig(proposal=ProposalConfig(layers=(0, 1)), **cfg), out)
    moves = [s.proposer.propose(t) for t in range(len(script))]
    assert len(set(moves)) == len(moves), "a repeated proposal would share its scripted delta"
    fake.deltas = {m: np.asarray(d, np.float64) for m, d in zip(moves, script)}
    return s


# base: targets [-0.2, -0.4], control [1.0]; fixed order (0, 1)
BASE = [-0.2, -0.4, 1.0]
CROSSING = [[0.1, 0.0, 0.0],  # t0: target 0 -0.2 -> -0.1, accepted
            [0.2, 0.0, 0.0],  # t1: -0.1 -> 0.1: crosses; the focus moves to target 1
            [0.0, -0.1, 0.0],  # t2: target 1 worse, refused
            [0.0, 0.6, 0.0],  # t3: target 1 -0.4 -> 0.2: crosses; every target has crossed
            ] + [[0.5, 0.5, 1.0]] * 16  # t4..t19: better everywhere, refused all the same


@pytest.mark.parametrize("fitness", ["focused", "focused_proportional", "focused_barrier"])
def test_search_keeps_iterating_after_every_target_crossed(fixture_models, tmp_path, monkeypatch, fitness):
    model, probes = fixture_models["tied_gqa"], _probe_file(tmp_path / "probes.json")
    # window 5 at min_rate 0.5 would stop the search at iteration 9 (t4..t8 refused), were it applied
    # after every target crossed
    s = _scripted_search(model, tmp_path / "run", probes, BASE, CROSSING, monkeypatch, iterations=20,
                         fitness=fitness, window=5, min_rate=0.5)
    r = s.run(progress=False)
    s.finish(r, tmp_path / "run/patch.json", tmp_path / "run/iterations.parquet", tmp_path / "run/summary.json")
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert (summary["iterations_run"], summary["accepted"], summary["stop_reason"]) == (20, 3, "iterations")
    assert summary["acceptance_rate"] == 3 / 20
    table = pl.read_parquet(tmp_path / "run/iterations.parquet")
    assert table["accepted"].to_list() == [True, True, False, True] + [False] * 16
    assert table["focus"].to_list()[:4] == [0, 0, 1, 1] and table["focus"][4:].is_null().all()
    assert summary["final_gaps"] == pytest.approx([0.1, 0.2, 1.0])

    # stop_when_done: the search ends at the iteration after the last crossing
    s = _scripted_search(model, tmp_path / "stop", probes, BASE, CROSSING, monkeypatch, iterations=20,
                         fitness=fitness, window=5, min_rate=0.5, stop_when_done=True)
    r = s.run(progress=False)
    assert (r.iterations_run, r.accepted, r.stop_reason) == (4, 3, "all targets crossed")


def test_window_still_stops_a_focused_search_before_every_target_crossed(fixture_models, tmp_path, monkeypatch):
    model, probes = fixture_models["tied_gqa"], _probe_file(tmp_path / "probes.json")
    script = [[0.1, 0.0, 0.0]] + [[-0.1, 0.0, 0.0]] * 19  # one gain, then nothing the focus accepts
    s = _scripted_search(model, tmp_path / "run", probes, BASE, script, monkeypatch, iterations=20,
                         fitness="focused", window=5, min_rate=0.5)
    r = s.run(progress=False)
    # history T F F F F: 1 of the trailing 5 < 2.5 after t4, so it stops at iteration 5
    assert (r.iterations_run, r.accepted) == (5, 1) and r.stop_reason.startswith("acceptance below")


RESUME = [[0.3, 0.0, 0.0],  # t0: target 0 -0.2 -> 0.1: crosses; focus target 1
          [0.0, 0.1, 0.0],  # t1: target 1 -0.4 -> -0.3, accepted
          [0.0, -0.05, 0.0],  # t2: refused (SIGTERM while proposing it: the checkpoint is at 3)
          [0.2, 0.0, 0.0],  # t3: only target 0 gains: refused while the focus is 1 (accepted, were
                            #     target 0's crossing forgotten and the fixed order restarted at 0)
          [-0.2, 0.1, 0.0],  # t4: pushes crossed target 0 back to -0.1: refused
          [0.0, 0.5, 0.0],  # t5: target 1 -0.3 -> 0.2: crosses
          ] + [[1.0, 1.0, 1.0]] * 4  # t6..t9: refused, every target has crossed


def test_fixed_order_and_crossed_set_survive_a_resume(fixture_models, tmp_path, monkeypatch):
    model, probes = fixture_models["tied_gqa"], _probe_file(tmp_path / "probes.json")
    cfg = dict(iterations=10, fitness="focused", checkpoint_every=2, min_rate=0.0)

    def finished(s, r, out):
        s.finish(r, out / "patch.json", out / "iterations.parquet", out / "summary.json")
        return (json.loads((out / "patch.json").read_text()), pl.read_parquet(out / "iterations.parquet"),
                json.loads((out / "summary.json").read_text()))

    ref = tmp_path / "ref"
    s = _scripted_search(model, ref, probes, BASE, RESUME, monkeypatch, **cfg)
    patch_ref, table_ref, summary_ref = finished(s, s.run(progress=False), ref)
    assert table_ref["accepted"].to_list() == [True, True, False, False, False, True] + [False] * 4
    assert table_ref["focus"].to_list()[:6] == [0, 1, 1, 1, 1, 1]

    out = tmp_path / "stopped"
    s = _scripted_search(model, out, probes, BASE, RESUME, monkeypatch, **cfg)
    propose = s.proposer.propose

    def propose_then_term(t):
        if t == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the search's own handler: finish t2, checkpoint, exit
        return propose(t)

    s.proposer.propose = propose_then_term
    with pytest.raises(SystemExit, match="stopped by SIGTERM"):
        s.run(progress=False)
    assert json.loads((out / ".checkpoint/checkpoint.json").read_text())["next_iteration"] == 3

    s = _scripted_search(model, out, probes, BASE, RESUME, monkeypatch, **cfg)
    r = s.run(progress=False)
    assert s.fitness.crossed == {0, 1}
    patch, table, summary = finished(s, r, out)
    assert table.equals(table_ref)
    assert patch["flips"] == patch_ref["flips"]
    drop = ("elapsed_s", "iterations_per_s")
    assert {k: v for k, v in summary.items() if k not in drop} == {k: v for k, v in summary_ref.items() if k not in drop}


# ---------------------------------------------------------------------------- settings


def test_focus_settings_reach_the_search_from_config_and_command_line(tmp_path):
    from neagari.cli import build_parser
    from neagari.search.runner import search_config, search_defaults
    from neagari.workflow.runs import search_runs

    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    targeted = schema["properties"]["search"]["properties"]["targeted"]["properties"]
    d = search_defaults()
    assert (d["focus_order"], d["stop_when_done"], d["barrier_mu"]) == ("fixed", False, 0.1)
    assert {k: targeted[k]["default"] for k in ("focus_order", "stop_when_done", "barrier_mu")} == \
        {k: d[k] for k in ("focus_order", "stop_when_done", "barrier_mu")}
    assert targeted["fitnesses"]["items"]["enum"] == list(FITNESS_NAMES)

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["search"]["targeted"].update(focus_order="dynamic", stop_when_done=True, barrier_mu=0.25)
    validate(config, schema=str(REPO / "config/schema.yaml"))
    run = search_runs(config)[("embedded-qat", "targeted", "focused_barrier")]
    cfg = search_config({"layers": config["search"]["layers"], **run.search_settings()})
    assert (cfg.fitness, cfg.focus_order, cfg.stop_when_done, cfg.barrier_mu) == ("focused_barrier", "dynamic", True, 0.25)

    base = ["search", "m.gguf", "--probes", "p.json", "--out", str(tmp_path), "--iterations", "3", "--layers", "0"]
    cfg = search_config(vars(build_parser().parse_args(base)))
    assert (cfg.focus_order, cfg.stop_when_done, cfg.barrier_mu) == ("fixed", False, 0.1)
    a = build_parser().parse_args(base + ["--fitness", "focused_barrier", "--focus-order", "dynamic",
                                          "--stop-when-done", "--barrier-mu", "0.5"])
    cfg = search_config(vars(a))
    assert (cfg.fitness, cfg.focus_order, cfg.stop_when_done, cfg.barrier_mu) == ("focused_barrier", "dynamic", True, 0.5)
