"""The subspace sweep on ternary (Q2_0) models: moves and weight deltas go through each tensor's
block format (64-weight blocks, code transpositions, scale bits), on a Q2_0 and a mixed model."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch

from neagari.engine import q1, q2
from neagari.engine.config import ModelConfig
from neagari.engine.engine import Engine
from neagari.engine.export import write_model
from neagari.engine.fixtures import FixtureSpec, fixture_tokenizer_metadata, random_weights, write_fixture_model
from neagari.search.patch import Move
from neagari.analysis.subspace.bases import apply_moves, weight_candidates, weight_delta_factors, weight_deltas
from neagari.analysis.subspace.measures import layer_targets
from neagari.analysis.subspace.sweep import summarize, sweep_patch
from neagari.analysis.subspace.schemas import SubspacePerLayer, SubspaceSummary
from test_engine_q2 import MIXED

SPEC = FixtureSpec(n_layer=2, hidden=128, ffn=256, n_head=4, n_kv_head=2, head_dim=32, tied_embeddings=False, seed=7)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = write_fixture_model(tmp_path_factory.mktemp("subq2") / "q2.gguf",
                               dataclasses.replace(SPEC, block_type=q2.GGML_TYPE))
    return Engine.load(path)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    tok = fixture_tokenizer_metadata(512)
    cfg = ModelConfig(n_layer=2, hidden=128, ffn=256, n_head=4, n_kv_head=2, head_dim=32,
                      vocab_size=len(tok["tokenizer.ggml.tokens"]), tied_embeddings=False)
    return Engine.load(write_model(tmp_path_factory.mktemp("subq2") / "mixed.gguf", cfg, random_weights(cfg, seed=7),
                                   tok, tensor_types=MIXED))


def block_after(engine, tensor: str, group: int, kind: str, bit=None) -> np.ndarray:
    """The block's 64 weights after one move, computed from its bytes by q2's NumPy functions."""
    lin = engine.linear(tensor)
    raw = lin.raw.view(-1).numpy().copy()
    q2.move_group_bytes(raw, group, kind, bit)
    return q2.dequantize(raw[q2.block_bytes(group)].reshape(1, -1)).reshape(-1).astype(np.float64)


@pytest.mark.parametrize("kind, bit", [("negate", None), ("zero_plus", None), ("zero_minus", None), ("scale", 7)])
def test_each_ternary_move_gives_its_exact_delta(engine, kind, bit):
    tensor, group = "blk.1.ffn_down.weight", 9
    lin = engine.linear(tensor)
    w = lin.dense().double().clone()
    row, col = q2.group_location(group, lin.in_features)
    assert (row, col) != q1.group_location(group, lin.in_features)  # 64-weight blocks, not 128
    (rows, delta), = weight_deltas(engine, [Move(1, "ffn_down.weight", group, kind, bit, "Q2_0")]).values()
    assert rows.tolist() == [row]
    expected = torch.zeros_like(w[row])
    expected[col : col + q2.QK] = torch.from_numpy(block_after(engine, tensor, group, kind, bit)) - w[row, col : col + q2.QK]
    torch.testing.assert_close(delta[0], expected, rtol=0, atol=0)
    assert 0 < int((delta != 0).sum()) <= q2.QK and not delta[0, :col].any() and not delta[0, col + q2.QK:].any()
    if kind == "negate":
        torch.testing.assert_close(delta[0, col : col + q2.QK], -2 * w[row, col : col + q2.QK], rtol=0, atol=0)
    torch.testing.assert_close(lin.dense().double(), w)  # engine back to the base


def test_moves_on_one_block_apply_in_order(engine):
    """zero_plus then negate is not negate then zero_plus: the delta follows the patch's order."""
    tensor, group = "blk.0.ffn_up.weight", 30
    lin = engine.linear(tensor)
    moves = [Move(0, "ffn_up.weight", group, k, None, "Q2_0") for k in ("zero_plus", "negate")]
    raw = lin.raw.view(-1).numpy().copy()
    for m in moves:
        q2.move_group_bytes(raw, group, m.type)
    row, col = q2.group_location(group, lin.in_features)
    want = q2.dequantize(raw[q2.block_bytes(group)].reshape(1, -1)).reshape(-1).astype(np.float64)
    (_, forward), = weight_deltas(engine, moves).values()
    (_, backward), = weight_deltas(engine, moves[::-1]).values()
    base = lin.dense().double()[row, col : col + q2.QK]
    torch.testing.assert_close(forward[0, col : col + q2.QK], torch.from_numpy(want) - base, rtol=0, atol=0)
    assert not torch.equal(forward, backward)


def test_a_move_recorded_for_another_format_is_refused(engine, mixed):
    with pytest.raises(ValueError, match=r"records a Q1_0 tensor, the model's blk\.0\.ffn_gate\.weight is Q2_0"):
        apply_moves(engine, [Move(0, "ffn_gate.weight", 3, "scale", 5, "Q1_0")])
    with pytest.raises(ValueError, match="records a Q2_0 tensor"):
        # blk.1's MLP is Q1_0; the good first move is not applied either
        apply_moves(mixed, [Move(0, "ffn_down.weight", 3, "negate", None, "Q2_0"),
                            Move(1, "ffn_down.weight", 3, "negate", None, "Q2_0")])
    assert not mixed.linear("blk.0.ffn_down.weight").touched
    assert not any(engine.linear(f"blk.{l}.{p}.weight").touched for l in (0, 1) for p in ("ffn_gate", "ffn_up"))


def test_mixed_model_deltas_use_each_tensors_format(mixed):
    q1_lin, q2_lin = mixed.linear("blk.1.ffn_down.weight"), mixed.linear("blk.0.ffn_down.weight")
    assert (q1_lin.fmt, q2_lin.fmt) == (q1, q2)
    moves = [Move(1, "ffn_down.weight", 5), Move(0, "ffn_down.weight", 5, "negate", None, "Q2_0")]
    deltas = weight_deltas(mixed, moves)
    for tensor, fmt in (("blk.1.ffn_down.weight", q1), ("blk.0.ffn_down.weight", q2)):
        lin = mixed.linear(tensor)
        row, col = fmt.group_location(5, lin.in_features)
        rows, delta = deltas[tensor]
        w = lin.dense().double()[row]
        assert rows.tolist() == [row]
        expected = torch.zeros_like(w)
        expected[col : col + fmt.QK] = -2 * w[col : col + fmt.QK]
        torch.testing.assert_close(delta[0], expected, rtol=0, atol=0)


def test_sweep_on_a_ternary_model(engine):
    """The whole sweep on a Q2_0 patch: bases, deltas, per-layer table and summary validate."""
    cands = weight_candidates(engine, kmax=16, broad_rank=32)
    moves = [Move(1, "ffn_down.weight", 3, "negate", None, "Q2_0"), Move(1, "ffn_gate.weight", 40, "zero_plus", None, "Q2_0"),
             Move(0, "ffn_up.weight", 7, "zero_minus", None, "Q2_0"), Move(1, "ffn_up.weight", 11, "scale", 6, "Q2_0")]
    factors = weight_delta_factors(engine, moves)
    assert set(factors) == {(1, "ffn_down"), (1, "ffn_gate"), (0, "ffn_up"), (1, "ffn_up")}
    assert set(layer_targets(factors, 1)) == {"ffn_down", "ffn_gate", "ffn_up", "write", "read", "all"}
    targets = [engine.encode(t) for t in ("Paris is the capital of", "def add(a, b):", "The quick brown fox", "In 1969, 3")]
    controls = [engine.encode(t) for t in ("Straße, naïve café", "SELECT * FROM users")]
    df = sweep_patch(engine, moves, cands, targets, controls, ranks=[4, 16], n_random=20, seed=0, batch_size=4)
    assert df.height > 0 and set(df["layer"].unique().to_list()) == {0, 1}
    df = df.with_columns(model=pl.lit("m"), patch=pl.lit("pass1/x"), stage=pl.lit("pass1"), run=pl.lit("x"))
    SubspacePerLayer.validate(df)
    SubspaceSummary.validate(summarize(df))
    assert not any(engine.linear(f"blk.{l}.{p}.weight").touched for l in (0, 1) for p in ("ffn_gate", "ffn_up", "ffn_down"))

