"""Q1_0 packing and the two moves, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neagari.engine import q1
from neagari.engine.model import Q1Linear


def test_quantize_hand_block():
    w = np.zeros((1, 128), dtype=np.float32)
    w[0, :] = -0.5
    w[0, [0, 9, 127]] = [1.5, 0.0, 2.0]  # 0.0 counts as non-negative: bit set
    raw = q1.quantize(w)
    assert raw.shape == (1, 18)
    d = raw[0, :2].view("<f2")[0]
    expected_d = (1.5 + 2.0 + 0.5 * 125) / 128
    assert d == np.float16(expected_d)
    bits = raw[0, 2:]
    assert bits[0] == 0b00000001  # weight 0
    assert bits[1] == 0b00000010  # weight 9 = byte 1, bit 1
    assert bits[15] == 0b10000000  # weight 127 = byte 15, bit 7
    assert bits[2:15].sum() == 0


def test_dequantize_inverts_quantize_signs_and_scales():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 384)).astype(np.float32)
    deq = q1.dequantize(q1.quantize(w))
    assert deq.shape == w.shape
    assert np.array_equal(deq >= 0, w >= 0)
    blocks = np.abs(w).reshape(3, 3, 128).mean(-1)
    assert np.allclose(np.abs(deq).reshape(3, 3, 128)[..., 0], blocks.astype(np.float16), rtol=0, atol=0)
    # quantize is idempotent on already-binary weights
    assert np.array_equal(q1.quantize(deq), q1.quantize(w))


def test_torch_matches_numpy():
    rng = np.random.default_rng(1)
    raw = q1.quantize(rng.standard_normal((5, 256)).astype(np.float32))
    assert np.array_equal(q1.dequantize_torch(torch.from_numpy(raw)).numpy(), q1.dequantize(raw))


def test_row_length_must_be_multiple_of_128():
    with pytest.raises(ValueError, match="multiple of 128"):
        q1.quantize(np.zeros((2, 100), dtype=np.float32))


def test_byte_moves_hand_computed():
    rng = np.random.default_rng(2)
    raw = q1.quantize(rng.standard_normal((2, 256)).astype(np.float32))
    flat = raw.reshape(-1).copy()
    q1.xor_group_bytes(flat, 3)  # group 3 = row 1, columns 128..255
    moved = q1.dequantize(flat.reshape(2, -1))
    base = q1.dequantize(raw)
    assert np.array_equal(moved[1, 128:], -base[1, 128:])
    assert np.array_equal(moved[:, :128], base[:, :128]) and np.array_equal(moved[0], base[0])
    # scale bit 9 is the top mantissa bit: d = 2^e (1 + m/1024) changes by ±2^(e-15) * 2^9 / 1024 = ±2^(e-16)
    flat = raw.reshape(-1).copy()
    d0 = float(raw.reshape(-1, 18)[2, :2].view("<f2")[0])
    q1.xor_scale_bit_bytes(flat, 2, 9)
    d1 = float(flat.reshape(-1, 18)[2, :2].view("<f2")[0])
    e = np.floor(np.log2(d0))
    assert abs(abs(d1 - d0) - 2.0 ** (e - 1)) < 1e-12
    q1.xor_scale_bit_bytes(flat, 2, 9)
    assert np.array_equal(flat, raw.reshape(-1))


@pytest.mark.parametrize("cache", [torch.float32, None])
def test_linear_moves_self_inverse_and_cache_in_step(cache):
    rng = np.random.default_rng(3)
    raw = torch.from_numpy(q1.quantize(rng.standard_normal((4, 256)).astype(np.float32)))
    lin = Q1Linear(raw.clone(), 256, cache_dtype=cache)
    base_w = lin.dense().clone()
    lin.xor_group(5)  # row 2, second block
    lin.xor_scale_bit(1, 6)  # row 0, second block
    w = lin.dense()
    assert torch.equal(w[2, 128:], -base_w[2, 128:])
    assert torch.equal(w, q1.dequantize_torch(lin.raw))  # cache equals a full re-dequantization
    changed = (w != base_w).nonzero()[:, 0].unique().tolist()
    assert changed == [0, 2]
    lin.xor_group(5)
    lin.xor_scale_bit(1, 6)
    assert torch.equal(lin.raw, raw) and torch.equal(lin.dense(), base_w)
    lin.xor_group(0)
    lin.xor_scale_bit(7, 4)
    lin.reset()
    assert torch.equal(lin.raw, raw) and torch.equal(lin.dense(), base_w) and not lin.touched
    with pytest.raises(IndexError):
        lin.xor_group(8)
