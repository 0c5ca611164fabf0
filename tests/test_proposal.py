"""Group sampling ∝ |scale| follows the accepted state, as upstream's run_search does (it draws from
the scales of its live cache, where accepted scale flips are): the probabilities after scale flips
are checked against values worked out by hand from the scales written into a fixture file, the
draws against those probabilities, and searches with scale sampling and scale moves against
themselves run uninterrupted, resumed from a checkpoint and speculating."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from neagari.engine import q1
from neagari.engine.engine import Engine
from neagari.search import split_probes
from neagari.search.patch import Move
from neagari.search.proposal import ProposalConfig, Proposer
from neagari.search.runner import Search, SearchConfig
from test_patch_moves import with_scales

REPO = Path(__file__).resolve().parents[1]
PROBES = REPO / "resources/probes/smoke.json"
DOWN = "blk.0.ffn_down.weight"
N_DOWN = 256  # tied_gqa's ffn_down is (128, 256): two groups a row


@pytest.fixture(scope="module")
def halves(fixture_models, tmp_path_factory) -> Path:
    """tied_gqa with blk.0.ffn_down's scales overwritten: group 0 is 1.0, group 2 is -0.5, every
    other group 0.5 (sum of |scale| 128.5)."""
    base = fixture_models["tied_gqa"]
    d = np.full(N_DOWN, 0.5, dtype=np.float16)
    d[0], d[2] = 1.0, -0.5
    return with_scales(base, DOWN, d, tmp_path_factory.mktemp("halves") / "halves.gguf")


def _down(sampling: str) -> ProposalConfig:
    return ProposalConfig(layers=(0,), projections=("ffn_down",), group_sampling=sampling, scale_prob=0.5)


def _commit(engine, proposer, move: Move) -> None:
    """A move applied to the engine's weights and reported, as the search commits an accepted move."""
    if move.type == "scale":
        engine.flip_scale_bit(move.tensor, move.group, move.bit)
    else:
        engine.flip_group(move.tensor, move.group)
    proposer.accepted(move)


def test_probabilities_follow_the_live_scales_by_hand(halves):
    eng = Engine.load(halves)
    live, base = Proposer(eng, _down("scale"), seed=0), Proposer(eng, _down("scale_base"), seed=0)
    start = np.full(N_DOWN, 0.5 / 128.5)
    start[0] = 1.0 / 128.5
    for p in (live, base):
        assert np.allclose(p.probabilities(0, "ffn_down.weight"), start, rtol=1e-12, atol=0)
    # fp16 1.0 with mantissa bit 9 set is 1.5; -0.5 with bit 8 set is -0.625; a sign move keeps |scale|
    for m in (Move(0, "ffn_down.weight", 0, "scale", 9), Move(0, "ffn_down.weight", 2, "scale", 8),
              Move(0, "ffn_down.weight", 1, "group")):
        _commit(eng, live, m)
        base.accepted(m)
    assert float(eng.weight(DOWN)[0, :128].abs().max()) == 1.5  # the engine holds the flipped scale
    total = 1.5 + 0.625 + 254 * 0.5  # 129.125
    want = np.full(N_DOWN, 0.5 / total)
    want[0], want[2] = 1.5 / total, 0.625 / total
    assert np.allclose(live.probabilities(0, "ffn_down.weight"), want, rtol=1e-12, atol=0)
    assert np.allclose(base.probabilities(0, "ffn_down.weight"), start, rtol=1e-12, atol=0)
    # the table built on the way is the one a proposer built on the flipped model from scratch has
    fresh = Proposer(eng, _down("scale"), seed=0)
    assert np.array_equal(fresh.cum_scale[(0, "ffn_down.weight")], live.cum_scale[(0, "ffn_down.weight")])
    assert [fresh.propose(t) for t in range(200)] == [live.propose(t) for t in range(200)]


def test_draws_follow_the_live_scales(halves):
    """Groups 128..255 get bit 9 (0.5 -> 0.75): their share of the draws goes from 64 / 128.5 to
    96 / 160.5 under "scale" and stays under "scale_base"."""
    eng = Engine.load(halves)
    live, base = Proposer(eng, _down("scale"), seed=1), Proposer(eng, _down("scale_base"), seed=1)
    for g in range(128, N_DOWN):
        m = Move(0, "ffn_down.weight", g, "scale", 9)
        _commit(eng, live, m)
        base.accepted(m)
    n = 20_000
    sd = 0.5 / np.sqrt(n)  # the largest standard deviation of a share of n draws
    for proposer, share in ((live, 96 / 160.5), (base, 64 / 128.5)):
        drawn = np.array([proposer.propose(t).group for t in range(n)])
        assert abs(np.mean(drawn >= 128) - share) < 5 * sd
    # the two expected shares are 28 sd apart: each bound excludes the other's
    assert abs(96 / 160.5 - 64 / 128.5) > 20 * sd


def test_a_tensor_whose_scales_are_all_zero_is_refused(fixture_models, tmp_path):
    base = fixture_models["tied_gqa"]
    eng = Engine.load(with_scales(base, DOWN, np.zeros(N_DOWN), tmp_path / "zero.gguf"))
    with pytest.raises(ValueError, match="blk.0.ffn_down.weight: no group has a nonzero scale"):
        Proposer(eng, _down("scale"), seed=0)
    Proposer(eng, _down("uniform"), seed=0)  # uniform sampling does not weigh scales


# ---------------------------------------------------------------------------- searches

ITERATIONS, STOP_AT = 240, 110


def _search(model, out, iterations=ITERATIONS, sampling="scale", **kw) -> Search:
    cfg = SearchConfig(iterations=iterations, lam=1.0, seed=5, min_rate=0.0, checkpoint_every=20,
                       proposal=ProposalConfig(layers=(0, 1), group_sampling=sampling, scale_prob=0.7), **kw)
    targets, controls = split_probes(PROBES)
    return Search(Engine.load(model), model, targets, controls, cfg, out)


def _moves(s: Search) -> list[Move]:
    torch.set_num_threads(1)  # near-tie verdicts depend on the float sums' order
    return s.run(progress=False).moves


def _stopped(model, out) -> None:
    """The search stopped by its own SIGTERM handler while proposing STOP_AT (checkpoint at STOP_AT+1)."""
    s = _search(model, out)
    propose = s.proposer.propose

    def propose_then_term(t):
        if t == STOP_AT:
            os.kill(os.getpid(), signal.SIGTERM)
        return propose(t)

    s.proposer.propose = propose_then_term
    with pytest.raises(SystemExit, match="stopped by SIGTERM"):
        _moves(s)


@pytest.fixture(scope="module")
def reference(fixture_models, tmp_path_factory):
    model = fixture_models["tied_gqa"]
    s = _search(model, tmp_path_factory.mktemp("ref"))
    moves = _moves(s)
    assert sum(m.type == "scale" for m in moves) >= 3, "too few accepted scale moves for the checks below"
    # the run's tables are those of the state it ended in
    fresh = Proposer(s.engine, s.cfg.proposal, s.cfg.seed)
    assert all(np.array_equal(fresh.cum_scale[k], s.proposer.cum_scale[k]) for k in fresh.cum_scale)
    return model, moves


def test_live_sampling_changes_the_search(reference, tmp_path):
    """The checks below have power: with base-model tables the same search takes other moves."""
    model, moves = reference
    assert _moves(_search(model, tmp_path, sampling="scale_base")) != moves


def test_resume_reproduces_the_uninterrupted_search(reference, tmp_path):
    model, moves = reference
    out = tmp_path / "run"
    _stopped(model, out)
    assert _moves(_search(model, out)) == moves
    # and it needs the replayed scale moves in the tables: a resume that skips them diverges
    out = tmp_path / "stale"
    _stopped(model, out)
    s = _search(model, out)
    s.proposer.accepted = lambda m: None  # neither the replay nor later acceptances reach the tables
    assert _moves(s) != moves


def test_speculation_equals_sequential_with_live_sampling(reference, tmp_path):
    model, moves = reference
    assert _moves(_search(model, tmp_path, speculate=6)) == moves


def test_accept_all_keeps_the_tables_of_the_state(fixture_models, tmp_path):
    """The random-flip null commits every proposal; the tables follow every scale move."""
    model = fixture_models["tied_gqa"]
    s = _search(model, tmp_path, iterations=60, accept_all=True)
    moves = _moves(s)
    assert len(moves) == 60 and sum(m.type == "scale" for m in moves) >= 20
    fresh = Proposer(s.engine, s.cfg.proposal, s.cfg.seed)
    assert all(np.array_equal(fresh.abs_scale[k], s.proposer.abs_scale[k]) for k in fresh.abs_scale)
    lin = s.engine.linear(moves[0].tensor)
    live = np.abs(q1.scales_torch(lin.raw).cpu().numpy().reshape(-1).astype(np.float64))
    assert np.array_equal(s.proposer.abs_scale[(moves[0].layer, moves[0].proj)], live)
