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


@pytest.mark.parametrize("bit", [None, 0, 9, 15])
def test_move_bytes_and_xor_block_agree(bit):
    rng = np.random.default_rng(4)
    flat = q1.quantize(rng.standard_normal((2, 256)).astype(np.float32)).reshape(-1)
    a, b = flat.copy(), flat.copy()
    q1.xor_block(a[q1.block_bytes(3)], bit)
    offsets, masks = q1.move_bytes(3, bit)
    np.bitwise_xor.at(b, offsets, masks)
    assert np.array_equal(a, b) and not np.array_equal(a, flat)
    assert np.array_equal(a[: 3 * q1.BLOCK_BYTES], flat[: 3 * q1.BLOCK_BYTES])  # other blocks untouched
    np.bitwise_xor.at(b, np.concatenate([offsets, offsets]), np.concatenate([masks, masks]))
    assert np.array_equal(b, a)  # a byte touched twice cancels
    # the torch view of the same block moves the same bytes
    t = torch.from_numpy(flat.copy())
    q1.xor_block(t[q1.block_bytes(3)], bit)
    assert np.array_equal(t.numpy(), a)


def test_scale_bit_outside_the_scale_is_refused():
    with pytest.raises(ValueError, match="outside 0..15"):
        q1.scale_bit_byte(16)


def test_pack_blocks_lays_out_scale_then_signs():
    d = np.array([[0.25, 1.5]], dtype=np.float32)
    nonneg = np.zeros((1, 2, q1.QK), dtype=bool)
    nonneg[0, 1, [0, 127]] = True
    raw = q1.pack_blocks(d, nonneg)
    assert raw.shape == (1, 2 * q1.BLOCK_BYTES)
    assert np.array_equal(q1.dequantize(raw)[0, :128], np.full(128, -0.25, dtype=np.float32))
    second = q1.dequantize(raw)[0, 128:]
    assert second[0] == second[127] == 1.5 and (second[1:127] == -1.5).all()
