"""Subspace sweep: scores against hand-made cases, exact weight deltas on a fixture model, axis
tagging, seeded random bases, and the tables end to end."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from neagari.engine import q1
from neagari.engine.engine import Engine
from neagari.engine.fixtures import FixtureSpec, write_fixture_model
from neagari.search.patch import Move
from neagari.search.probes import load_probes, token_ids
from neagari.analysis.subspace.measures import (NullCache, balanced, concentration, energy_fraction, layer_targets, left_basis,
                              matched_target, pca_basis, proj_side, random_bases, right_basis, thin_factor)
from neagari.analysis.subspace.bases import weight_candidates, weight_delta_factors, weight_deltas
from neagari.analysis.subspace.sweep import summarize, sweep_patch, write_conclusion
from neagari.analysis.subspace.schemas import SubspacePerLayer, SubspaceSummary

H, K = 64, 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # small eigh/QR calls: extra threads only contend with each other (7 s vs 0.1 s on 2 busy cores)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = write_fixture_model(tmp_path_factory.mktemp("subspace") / "m.gguf",
                               FixtureSpec(n_layer=2, hidden=128, ffn=256, n_head=4, n_kv_head=2, head_dim=32,
                                           tied_embeddings=False, seed=7))
    return Engine.load(path)


@pytest.fixture(scope="module")
def cands(engine):
    return weight_candidates(engine, kmax=16, broad_rank=32)


def _gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------- scores


def test_planted_delta_scores_at_the_ceiling():
    B = random_bases(H, K, 1, seed=3)[0]
    M = B @ _gaussian(K, 40, seed=1)  # every column inside span(B)
    nulls = NullCache(H, n_random=200, seed=0)
    s = nulls.score(0, "w", M, B)
    assert s.energy == pytest.approx(1.0, abs=1e-12)
    assert s.R == pytest.approx(H / K, rel=1e-12)  # the ceiling d/k
    assert s.null_mean == pytest.approx(1.0, abs=0.1)
    assert s.z > 20
    # the delta's own top singular subspace is the ceiling too
    assert concentration(M, left_basis(M, K)) == pytest.approx(H / K, rel=1e-9)


def test_random_delta_scores_near_the_null():
    M = _gaussian(H, 400, seed=2)
    B = random_bases(H, K, 1, seed=11)[0]
    nulls = NullCache(H, n_random=300, seed=0)
    s = nulls.score(0, "w", M, B)
    assert s.energy == pytest.approx(K / H, abs=0.03)
    assert s.R == pytest.approx(1.0, abs=0.25)
    assert abs(s.z) < 3
    assert s.null_mean == pytest.approx(1.0, abs=0.05)


def test_energy_ignores_the_factorisation():
    M = _gaussian(H, 300, seed=4)
    B = random_bases(H, K, 1, seed=5)[0]
    L = thin_factor(M)
    assert L.shape == (H, H)
    torch.testing.assert_close(L @ L.T, M @ M.T)
    assert energy_fraction(L, B) == pytest.approx(energy_fraction(M, B), rel=1e-10)
    # balancing: each part counts alike whatever its scale
    small, big = _gaussian(H, 5, seed=6), 100 * _gaussian(H, 5, seed=7)
    assert balanced([small, big]).norm() == pytest.approx(2 ** 0.5)


def test_bases_are_orthonormal_and_span_the_right_side():
    W = _gaussian(48, H, seed=8)  # a read matrix (out, H)
    R = right_basis(W, K)
    torch.testing.assert_close(R.T @ R, torch.eye(K, dtype=torch.float64))
    _, _, Vh = torch.linalg.svd(W)
    # same subspace as the top right singular vectors
    assert torch.linalg.svdvals(R.T @ Vh[:K].T).min() > 1 - 1e-9
    X = _gaussian(10, H, seed=9)
    assert pca_basis(X, 32).shape[1] == 9  # centred: at most N - 1 directions
    assert pca_basis(X, 32, center=False).shape[1] == 10


# ---------------------------------------------------------------------------- axis kinds


def test_axis_tagging():
    assert proj_side("ffn_down.weight") == proj_side("attn_output") == "write"
    assert {proj_side(p) for p in ("ffn_gate", "ffn_up", "attn_q", "attn_k", "attn_v")} == {"read"}
    with pytest.raises(ValueError):
        proj_side("token_embd")
    assert matched_target("write") == "write" and matched_target("read") == "read"
    assert {matched_target(k) for k in ("mixed", "ceiling", "random")} == {"all"}
    with pytest.raises(ValueError):
        matched_target("explains")


def test_weight_candidates_kinds(engine, cands):
    cands = {c.name: c for c in cands}
    reads = {"qkv_read", "gate_read", "up_read", "unembed_read", "unembed_null"}
    assert {n for n, c in cands.items() if c.kind == "read"} == reads
    assert {"attn_write", "mlp_write", "ov_circuit", "mlp_roundtrip", "write_not_later_read"} <= {
        n for n, c in cands.items() if c.kind == "write"}
    for c in cands.values():
        assert len(c.bases) == engine.cfg.n_layer
        for B in c.bases:
            assert B.shape[0] == engine.cfg.hidden and 1 <= B.shape[1] <= 16
            torch.testing.assert_close(B.T @ B, torch.eye(B.shape[1], dtype=torch.float64))


def test_read_bases_rank_on_read_deltas_only():
    # a write-side delta planted in a read basis: the summary ranks that basis on read deltas only
    rows = []
    for target, side, R in (("ffn_down", "write", 8.0), ("write", "write", 8.0), ("all", "all", 4.0)):
        rows.append({"model": "m", "patch": "pass1/x", "stage": "pass1", "run": "x", "layer": 0,
                     "candidate": "up_read", "kind": "read", "target": target, "target_side": side, "k": 8,
                     "rank": 8, "dim": 64, "energy": R / 8, "R": R, "null_mean": 1.0, "null_std": 0.1, "z": 70.0,
                     "n_random": 10, "delta_norm": 1.0, "definition": "d"})
    s = summarize(pl.DataFrame(rows)).row(0, named=True)
    assert s["w_target"] == "read" and s["R_w"] is None and s["R_w_write"] == 8.0


# ---------------------------------------------------------------------------- weight deltas


def test_group_flip_delta_is_minus_two_w(engine):
    tensor, group = "blk.1.ffn_down.weight", 5
    lin = engine.linear(tensor)
    w = lin.dense().double().clone()
    row, col = q1.group_location(group, lin.in_features)
    (rows, delta), = weight_deltas(engine, [Move(1, "ffn_down.weight", group)]).values()
    assert rows.tolist() == [row]
    expected = torch.zeros_like(w[row])
    expected[col : col + q1.QK] = -2 * w[row, col : col + q1.QK]
    torch.testing.assert_close(delta[0], expected, rtol=0, atol=0)
    assert int((delta != 0).sum()) == q1.QK
    torch.testing.assert_close(lin.dense().double(), w)  # engine back to the base


def test_scale_bit_flip_rescales_the_group(engine):
    tensor, group, bit = "blk.0.ffn_up.weight", 17, 6
    lin = engine.linear(tensor)
    w = lin.dense().double().clone()
    row, col = q1.group_location(group, lin.in_features)
    raw = lin.raw[row].numpy().copy().reshape(-1)
    d_old = float(raw[(col // q1.QK) * 18 : (col // q1.QK) * 18 + 2].view("<f2")[0])
    q1.xor_scale_bit_bytes(raw, col // q1.QK, bit)
    d_new = float(raw[(col // q1.QK) * 18 : (col // q1.QK) * 18 + 2].view("<f2")[0])
    (rows, delta), = weight_deltas(engine, [Move(0, "ffn_up.weight", group, "scale", bit)]).values()
    assert rows.tolist() == [row]
    expected = torch.zeros_like(w[row])
    expected[col : col + q1.QK] = w[row, col : col + q1.QK] * (d_new / d_old - 1)
    torch.testing.assert_close(delta[0], expected)
    assert int((delta != 0).sum()) == q1.QK


def test_delta_factors_put_each_tensor_on_its_residual_side(engine):
    moves = [Move(1, "ffn_down.weight", 3), Move(1, "ffn_down.weight", 40), Move(1, "ffn_gate.weight", 9)]
    deltas = weight_deltas(engine, moves)
    factors = weight_delta_factors(engine, moves)
    Hm = engine.cfg.hidden
    rows, d = deltas["blk.1.ffn_down.weight"]
    full = torch.zeros(Hm, d.shape[1], dtype=torch.float64)
    full[rows] = d
    torch.testing.assert_close(factors[(1, "ffn_down")] @ factors[(1, "ffn_down")].T, full @ full.T)
    _, g = deltas["blk.1.ffn_gate.weight"]
    torch.testing.assert_close(factors[(1, "ffn_gate")] @ factors[(1, "ffn_gate")].T, g.T @ g)
    assert set(layer_targets(factors, 1)) == {"ffn_down", "ffn_gate", "write", "read", "all"}


# ---------------------------------------------------------------------------- determinism


def test_random_bases_are_seeded():
    a, b, c = random_bases(H, K, 5, 42), random_bases(H, K, 5, 42), random_bases(H, K, 5, 43)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    torch.testing.assert_close(a[2].T @ a[2], torch.eye(K, dtype=torch.float64))
    M = _gaussian(H, 30, seed=1)
    B = random_bases(H, K, 1, 0)[0]
    s1, s2 = NullCache(H, 50, 9).score(3, "w", M, B), NullCache(H, 50, 9).score(3, "w", M, B)
    assert s1 == s2


# ---------------------------------------------------------------------------- end to end


def test_sweep_tables_validate(engine, cands):
    probes = load_probes("resources/probes/smoke.json")
    seqs = [token_ids(p, engine.tokenizer)[0] for p in probes]
    controls = [engine.encode(t) for t in ("The quick brown fox jumps.", "def add(a, b):", "Straße, naïve café")]
    moves = [Move(0, "ffn_down.weight", g) for g in (1, 50, 90)] + [Move(1, "ffn_up.weight", 7),
                                                                     Move(1, "ffn_gate.weight", 2, "scale", 9)]
    frames = []
    for stage in ("pass1", "randomflip"):
        df = sweep_patch(engine, moves, cands, seqs, controls, [4, 16], n_random=20, seed=0)
        frames.append(df.with_columns(model=pl.lit("fx"), patch=pl.lit(f"{stage}/smoke"), stage=pl.lit(stage),
                                      run=pl.lit("smoke")))
    per_layer = pl.concat(frames)
    SubspacePerLayer.validate(per_layer)
    assert per_layer.filter(pl.col("target") == "activation")["layer"].min() == 0
    ceiling = per_layer.filter((pl.col("candidate") == "delta_weight_svd") & (pl.col("target") == "all"))
    assert (ceiling["energy"] > 0.99).all()  # rank-16 basis of a rank ≤ 16 delta holds all of it
    summary = summarize(per_layer)
    SubspaceSummary.validate(summary)
    text = write_conclusion(summary, 16)
    assert "## write candidates" in text and "randomflip/smoke" in text


def test_empty_patch_gives_an_empty_valid_table(engine):
    df = sweep_patch(engine, [], [], [[1, 2]], [], [4], n_random=5, seed=0)
    df = df.with_columns(model=pl.lit("fx"), patch=pl.lit("pass1/x"), stage=pl.lit("pass1"), run=pl.lit("x"))
    SubspacePerLayer.validate(df)
    assert df.is_empty() and summarize(df).is_empty()


def test_activation_delta_starts_at_the_first_patched_layer(engine):
    from neagari.analysis.subspace.bases import activation_delta
    seqs = [engine.encode("The quick brown fox jumps."), engine.encode("def add(a, b):")]
    base, delta = activation_delta(engine, [Move(1, "ffn_down.weight", 4)], seqs)
    assert base.shape == delta.shape == (engine.cfg.n_layer, 2, engine.cfg.hidden)
    assert torch.equal(delta[0], torch.zeros_like(delta[0]))  # layer 0 is upstream of the move
    row = q1.group_location(4, engine.cfg.ffn)[0]
    assert delta[1].abs().argmax(-1).eq(row).all()  # only residual coordinate `row` is written
    assert int((delta[1] != 0).sum(-1).max()) == 1
