"""Search features the GPU runs use, checked on CPU against references the search did not produce:
scale-weighted group sampling (against the scales written into the file), auto-termination (the
stopping iteration worked out by hand), the accept-all null (every proposal, recomputed from
(seed, t), is in the patch; the final gaps equal a fresh forward of the patched bytes),
speculation under focused fitness (identical to sequential), and the bf16/fp16 weight caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neagari.engine.engine import Engine
from neagari.search import split_probes
from neagari.search.patch import apply_patch_files, read_patch
from neagari.search.proposal import ProposalConfig, Proposer
from neagari.search.runner import Search, SearchConfig
from test_patch_moves import brute_force_bytes, with_scales

REPO = Path(__file__).resolve().parents[1]
PROBES = REPO / "resources/probes/smoke.json"


def _gaps(engine, probes) -> np.ndarray:
    """Gaps of probes by a full forward (Engine.logits) of the whole prompt."""
    from neagari.search.probes import encode_probes

    enc = encode_probes(engine, probes)
    lg = torch.stack(engine.logits([e[0] for e in enc]))
    return np.array([float(lg[i, e[1]] - lg[i, e[2]]) for i, e in enumerate(enc)])


def _search(model, out, probes=PROBES, **kw):
    kw.setdefault("proposal", ProposalConfig(layers=(0, 1), scale_prob=0.3))
    dtype = kw.pop("dtype", None)
    targets, controls = split_probes(probes)
    s = Search(Engine.load(model, dtype=dtype), model, targets, controls, SearchConfig(**kw), out)
    return s


def _finish(s, r, out):
    s.finish(r, out / "patch.json", out / "iterations.parquet", out / "summary.json")
    return read_patch(out / "patch.json"), json.loads((out / "summary.json").read_text())


# ---------------------------------------------------------------------------- group_sampling: scale

DOWN = "blk.0.ffn_down.weight"


@pytest.fixture(scope="module")
def wide_scales(fixture_models, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """tied_gqa with blk.0.ffn_down's 256 scales overwritten: 0.001..1 over three decades, every
    third negative (sampling weighs |scale|). Returns the file and the scales as written."""
    base = fixture_models["tied_gqa"]
    n = 256  # ffn_down (128, 256): two blocks a row
    d = np.geomspace(1e-3, 1.0, n).astype(np.float16)
    d[::3] *= -1
    np.random.default_rng(0).shuffle(d)
    path = with_scales(base, DOWN, d, tmp_path_factory.mktemp("scales") / "wide.gguf")
    return path, d.astype(np.float64)


def _counts(proposer, n_draws, n_groups):
    return np.bincount([proposer.propose(t).group for t in range(n_draws)], minlength=n_groups)


def _chi2(counts, p):
    e = counts.sum() * p
    return float(((counts - e) ** 2 / e).sum())


def test_scale_sampling_follows_abs_scale(wide_scales):
    path, d = wide_scales
    eng = Engine.load(path)
    n, draws = len(d), 40_000
    p = np.abs(d) / np.abs(d).sum()  # the reference: the file's scales, normalised
    cfg = ProposalConfig(layers=(0,), projections=("ffn_down",), group_sampling="scale")
    counts = _counts(Proposer(eng, cfg, seed=0), draws, n)
    # Pearson's statistic, n - 1 degrees of freedom: mean 255, sd sqrt(510) = 22.6; the bound is
    # 5 sd above the mean. Cells expected below 5 are pooled (the smallest |scale| are 1000x rarer).
    small = draws * p < 5
    pooled_c = np.append(counts[~small], counts[small].sum())
    pooled_p = np.append(p[~small], p[small].sum())
    df = len(pooled_c) - 1
    assert _chi2(pooled_c, pooled_p) < df + 5 * np.sqrt(2 * df)
    # the test has power: uniform sampling is far outside the bound
    uniform = _counts(Proposer(eng, ProposalConfig(layers=(0,), projections=("ffn_down",)), seed=0), draws, n)
    assert _chi2(np.append(uniform[~small], uniform[small].sum()), pooled_p) > 10 * (df + 5 * np.sqrt(2 * df))
    # the ten largest |scale| groups get about the share they should
    top = np.argsort(-np.abs(d))[:10]
    assert counts[top].sum() / draws == pytest.approx(p[top].sum(), rel=0.05)


def test_scale_sampling_reads_the_live_scales_and_scale_base_the_file(wide_scales):
    """"scale": probability ∝ |scale| in the accepted state (upstream's run_search reads its live
    cache); "scale_base": ∝ |scale| as the file holds it, whatever was flipped since."""
    path, d = wide_scales
    eng = Engine.load(path)
    cfg = {s: ProposalConfig(layers=(0,), projections=("ffn_down",), group_sampling=s, scale_prob=0.5)
           for s in ("scale", "scale_base")}
    before = [Proposer(eng, cfg["scale"], seed=4).propose(t) for t in range(300)]
    big, small = int(np.argmax(np.abs(d))), int(np.argmin(np.abs(d)))
    eng.flip_scale_bit(DOWN, big, 9)  # its |scale| 1.0 -> 1.5 (live), and another group's
    eng.flip_scale_bit(DOWN, small, 9)
    assert float(eng.weight(DOWN).abs().max()) == 1.5
    assert [Proposer(eng, cfg["scale_base"], seed=4).propose(t) for t in range(300)] == before
    live = Proposer(eng, cfg["scale"], seed=4)
    flipped = np.abs(d)
    flipped[big] = 1.5
    bits = np.array([d[small]], dtype=np.float16).view(np.uint16) ^ np.uint16(1 << 9)
    flipped[small] = abs(float(bits.view(np.float16)[0]))
    assert np.allclose(live.probabilities(0, "ffn_down.weight"), flipped / flipped.sum(), rtol=1e-12, atol=0)
    assert [live.propose(t) for t in range(300)] != before


# ---------------------------------------------------------------------------- auto-termination


def test_window_stops_the_search_where_worked_out_by_hand(fixture_models, tmp_path):
    """Proposals: the real proposer's up to its first acceptance at iteration a, then that move
    again and again; each repeat would undo it (fitness back to the previous, lower value), so all
    are rejected. With window 20 and min_rate 0.05 the search stops when the last 20 iterations
    accepted fewer than 1 move: history F*a, T, F*20, so after iteration a + 21."""
    model = fixture_models["tied_gqa"]
    probe = _search(model, tmp_path / "probe", iterations=40, min_rate=0.0)
    first = probe.run(progress=False)
    assert first.accepted
    s_ref = _search(model, tmp_path / "ref", iterations=40, min_rate=0.0)
    real = [s_ref.proposer.propose(t) for t in range(40)]
    a = next(t for t in range(40) if real[t] == first.moves[0])
    assert a < 20, "the first acceptance comes too late for this construction"
    script = real[: a + 1] + [real[a]] * 200
    for speculate in (1, 4):
        s = _search(model, tmp_path / f"w{speculate}", iterations=200, window=20, min_rate=0.05,
                    speculate=speculate)
        s.proposer.propose = lambda t: script[t]
        r = s.run(progress=False)
        assert r.iterations_run == a + 21, speculate
        assert r.accepted == 1 and r.moves == [real[a]]
        assert r.stop_reason == "acceptance below 5% over 20 iterations"
    # min_rate 0 never stops: the budget runs out
    s = _search(model, tmp_path / "w0", iterations=60, window=20, min_rate=0.0)
    s.proposer.propose = lambda t: script[t]
    assert s.run(progress=False).iterations_run == 60


# ---------------------------------------------------------------------------- accept_all


def test_accept_all_keeps_every_proposal(fixture_models, tmp_path):
    model = fixture_models["tied_gqa"]
    n = 30
    s = _search(model, tmp_path / "null", iterations=n, accept_all=True, fitness="focused", window=5,
                seed=7)
    r = s.run(progress=False)
    patch, summary = _finish(s, r, tmp_path / "null")
    # the reference: proposals recomputed from (seed, t) by a fresh proposer on a fresh engine
    fresh = Proposer(Engine.load(model), ProposalConfig(layers=(0, 1), scale_prob=0.3), seed=7)
    assert patch.moves == [fresh.propose(t) for t in range(n)]
    assert summary["accepted"] == summary["iterations_run"] == n
    import polars as pl

    assert pl.read_parquet(tmp_path / "null/iterations.parquet")["accepted"].to_list() == [True] * n
    # the state the search ended in is the patched file's
    path = tmp_path / "null.gguf"
    path.write_bytes(brute_force_bytes(model, patch.moves))
    targets, controls = split_probes(PROBES)
    assert np.abs(_gaps(Engine.load(path), targets + controls) - summary["final_gaps"]).max() < 1e-4


# ---------------------------------------------------------------------------- speculation, focused


def _distinct_probes(path) -> Path:
    """smoke.json less its two probes whose correct and wrong texts start with the same token: their
    gap is 0 whatever the weights, so a focused search that focuses on one never accepts."""
    doc = json.loads(PROBES.read_text())
    for group in doc["probes"].values():
        group[:] = [p for p in group if p["name"] not in ("arith_add", "json_status")]
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("fitness", ["focused", "focused_proportional"])
def test_speculation_equals_sequential_under_focused_fitness(fixture_models, tmp_path, fitness):
    model = fixture_models["tied_gqa"]
    probes = _distinct_probes(tmp_path / "probes.json")
    out = {}
    for k in (1, 6):
        s = _search(model, tmp_path / f"s{k}", probes, iterations=150, fitness=fitness, speculate=k,
                    checkpoint_every=25)
        r = s.run(progress=False)
        patch, summary = _finish(s, r, tmp_path / f"s{k}")
        apply_patch_files(model, tmp_path / f"s{k}.gguf", [tmp_path / f"s{k}/patch.json"])
        doc = json.loads((tmp_path / f"s{k}/patch.json").read_text())
        assert doc["search_config"].pop("speculate") == k
        out[k] = (patch.moves, doc, summary, (tmp_path / f"s{k}.gguf").read_bytes())
    (m1, d1, s1, b1), (m6, d6, s6, b6) = out[1], out[6]
    assert len(m1) >= 3, "too few acceptances to compare"
    assert m1 == m6
    assert d1 == d6  # every flip record, gap and fitness value, bit for bit
    assert b1 == b6
    assert (s1["iterations_run"], s1["stop_reason"], s1["final_gaps"]) == \
        (s6["iterations_run"], s6["stop_reason"], s6["final_gaps"])


# ---------------------------------------------------------------------------- bf16 / fp16 caches

# Each linear layer casts its input to the cache's dtype and its output back (model.Q1Linear), so
# every matmul rounds with the dtype's unit roundoff u: bf16 2^-8, fp16 2^-11 (the weights
# themselves are exact in fp16, and only their fp16 scale is rounded in bf16). Measured on the
# conftest fixtures (all positions of PROMPTS): max |Δlogit| / max |logit| = 0.0072..0.0082 for
# bf16 and 0.00084..0.0010 for fp16, about 2u either way; the bound is 4u.
U = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11}
PROMPTS = [[5, 17, 42, 99, 3, 250, 7], [300, 2], [11] * 20 + [400, 12, 88], [64]]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_logits_are_close_to_fp32(fixture_model, dtype):
    ref = torch.cat(Engine.load(fixture_model).logits(PROMPTS, last_only=False))
    eng = Engine.load(fixture_model, dtype=dtype)
    assert eng.weight("blk.0.ffn_up.weight").dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    got = torch.cat(eng.logits(PROMPTS, last_only=False))
    rel = float((got - ref).abs().max() / ref.abs().max())
    assert rel <= 4 * U[dtype], f"{dtype}: relative error {rel:.5f}"
    assert rel > 0  # the low-precision path was really taken


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_search_is_deterministic_and_its_patch_replays(fixture_models, tmp_path, dtype):
    model = fixture_models["tied_gqa"]
    runs = []
    for i in range(2):
        s = _search(model, tmp_path / f"{dtype}{i}", iterations=60, dtype=dtype, min_rate=0.0)
        r = s.run(progress=False)
        runs.append(_finish(s, r, tmp_path / f"{dtype}{i}"))
    (p0, s0), (p1, s1) = runs
    assert p0.moves == p1.moves and s0["final_gaps"] == s1["final_gaps"]
    assert p0.moves, "nothing accepted"
    # the search's final gaps are the patched file's under the same dtype's full forward
    path = tmp_path / f"{dtype}.gguf"
    path.write_bytes(brute_force_bytes(model, p0.moves))
    assert p0.patched_sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    targets, controls = split_probes(PROBES)
    full = _gaps(Engine.load(path, dtype=dtype), targets + controls)
    scale = float(np.abs(full).max())
    assert np.abs(full - s0["final_gaps"]).max() <= 4 * U[dtype] * max(scale, 1.0)
