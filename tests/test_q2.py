"""Q2_0 packing, llama.cpp's quantization rule bit for bit, and the moves on ternary groups."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from neagari.engine import q2
from neagari.engine.config import ModelConfig
from neagari.engine.export import write_model
from neagari.engine.fixtures import fixture_tokenizer_metadata, random_weights
from neagari.engine.gguf_io import GGUFFile
from neagari.engine.model import Q2Linear

F16_ONE = bytes([0x00, 0x3C])  # fp16 1.0, little-endian


def codes_of(block: np.ndarray) -> list[int]:
    """The 64 codes of one 18-byte block, read from the layout written out here."""
    return [(int(block[2 + j // 4]) >> (2 * (j % 4))) & 3 for j in range(64)]


def test_quantize_hand_block():
    w = np.zeros((1, 64), dtype=np.float32)
    w[0, [0, 1, 2, 3, 5, 63]] = [2.0, -2.0, 1.0, -1.0, 0.9, -0.99]
    raw = q2.quantize(w)
    assert raw.shape == (1, 18)
    assert raw[0, :2].tobytes() == bytes([0x00, 0x40])  # d = max |w| = 2.0
    # w / d = 1, -1, 0.5, -0.5 (ties: away from zero), 0, 0.45, ..., -0.495 → codes 2, 0, 2, 0, 1, 1, ..., 1
    assert raw[0, 2] == 0b00_10_00_10
    assert raw[0, 3] == 0b01_01_01_01  # weights 4-7: 0, 0.45 → 0, 0, 0
    assert (raw[0, 4:17] == 0x55).all()
    assert raw[0, 17] == 0x55  # weight 63: -0.495 rounds to 0
    deq = q2.dequantize(raw)
    assert deq[0, :4].tolist() == [2.0, -2.0, 2.0, -2.0] and (deq[0, 4:] == 0).all()


def test_dequantize_hand_block_with_all_four_codes():
    block = np.frombuffer(bytes([0x00, 0x38]) + bytes([0b11_10_01_00]) + bytes([0x55] * 15), dtype=np.uint8)
    w = q2.dequantize(block.reshape(1, 18))[0]
    assert w[:4].tolist() == [-0.5, 0.0, 0.5, 1.0]  # codes 0..3 are -d, 0, +d, +2d with d = 0.5
    assert (w[4:] == 0).all()


def test_all_zero_block_and_fp32_amax():
    w = np.zeros((1, 128), dtype=np.float32)
    # second block: amax 1.0004 rounds to fp16 1.0, but codes divide by the fp32 amax:
    # 0.5001 / 1.0004 < 0.5 → 0, 0.50025 / 1.0004 > 0.5 → +1
    w[0, 64:67] = [1.0004, 0.5001, 0.50025]
    raw = q2.quantize(w)
    assert raw[0, :18].tobytes() == bytes(2) + bytes([0x55] * 16)  # d = 0, every code 1 (zero)
    assert raw[0, 18:20].tobytes() == F16_ONE
    assert codes_of(raw[0, 18:])[:3] == [q2.PLUS, q2.ZERO, q2.PLUS]


def test_round_trips():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 192)).astype(np.float32)
    raw = q2.quantize(w)
    deq = q2.dequantize(raw)
    d = np.abs(w).reshape(3, 3, 64).max(-1).astype(np.float16).astype(np.float32)
    assert set(np.unique(deq / np.repeat(d, 64, axis=1))) <= {-1.0, 0.0, 1.0}
    assert np.array_equal(q2.quantize(deq), raw)  # ternary weights quantize to themselves
    codes = rng.integers(0, 4, size=(5, 64 * 3), dtype=np.uint8)
    assert np.array_equal(q2.unpack_codes(q2.pack_codes(codes)), codes)
    assert np.array_equal(q2.pack_blocks(d, q2.unpack_codes(raw.reshape(3, 3, 18)[..., 2:]).reshape(3, 3, 64)), raw)


def test_refusals():
    with pytest.raises(ValueError, match="multiple of 64"):
        q2.quantize(np.zeros((2, 96), dtype=np.float32))
    with pytest.raises(ValueError, match="inf/NaN"):
        q2.quantize(np.full((1, 64), np.nan, dtype=np.float32))


def test_torch_matches_numpy():
    rng = np.random.default_rng(1)
    raw = q2.quantize(rng.standard_normal((5, 256)).astype(np.float32))
    raw[:, 2::18] = rng.integers(0, 256, size=raw[:, 2::18].shape, dtype=np.uint8)  # code 3 too
    t = torch.from_numpy(raw)
    assert np.array_equal(q2.dequantize_torch(t).numpy(), q2.dequantize(raw))
    assert np.array_equal(q2.codes_torch(t).numpy(), q2.unpack_codes(raw.reshape(5, -1, 18)[..., 2:]).reshape(5, -1))
    assert np.array_equal(q2.scales_torch(t).numpy(), raw.reshape(5, -1, 18)[..., :2].copy().view("<f2")[..., 0])
    block = t.reshape(-1)[q2.block_bytes(7)]
    assert torch.equal(q2.group_weights_torch(block, torch.float32), q2.dequantize_torch(t)[1, 192:256])


# ---------------------------------------------------------------------------- against ggml


@pytest.mark.llama
def test_ggml_layout_is_ours():
    from ggml_ref import traits

    assert traits(q2.GGML_TYPE) == ("q2_0", q2.QK, q2.BLOCK_BYTES)


def edge_rows() -> np.ndarray:
    """Blocks at the rule's edges: all zero, ties at w / d = ±0.5, float32 neighbours of the tie,
    an amax fp16 does not hold, a negative amax, tiny and subnormal scales, fp16 overflow."""
    rows = np.zeros((10, 64), dtype=np.float32)
    rows[1, :5] = [1.0, 0.5, -0.5, 0.25, -1.0]
    half = np.float32(0.5)
    rows[2, :5] = [1.0, np.nextafter(half, 0), np.nextafter(half, 1), -np.nextafter(half, 0), -np.nextafter(half, 1)]
    rows[3, :3] = [1.0004, 0.5001, 0.50025]
    rows[4, :3] = [-3.0, 1.5, 1.4999999]
    rows[5, :2] = [1e-30, 5e-31]  # d underflows fp16 to 0
    rows[6, :3] = [2e-39, 1e-39, -2e-39]  # subnormal amax: 1 / amax overflows
    rows[7, :3] = [1e6, 5e5, -4e5]  # d overflows fp16 to inf
    rows[8] = np.float32(7.3) * np.where(np.arange(64) % 3 == 0, 1, -1)
    rows[9, ::2] = -0.0
    return rows


@pytest.mark.llama
def test_quantizer_equals_ggml_reference_rows():
    """Our rule against ggml's quantize_row_q2_0_ref on random rows and the edge blocks."""
    from ggml_ref import quantize_rows

    rng = np.random.default_rng(2)
    random = rng.standard_normal((64, 256)).astype(np.float32) * rng.uniform(0.01, 100, (64, 1)).astype(np.float32)
    # values near the tie w = amax / 2 of each block, float32 ulps apart
    amax = np.abs(random.reshape(64, 4, 64)).max(-1, keepdims=True)
    near = (amax / 2 + np.arange(-32, 32, dtype=np.float32) * np.spacing(amax / 2)).astype(np.float32)
    near[..., 0] = amax[..., 0]
    for rows in (random, near.reshape(64, 256), edge_rows()):
        with np.errstate(over="ignore"):
            assert np.array_equal(q2.quantize(rows), quantize_rows(q2.GGML_TYPE, rows))


@pytest.mark.llama
def test_dequantize_equals_ggml():
    from ggml_ref import dequantize_rows

    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, size=(8, 4 * 18), dtype=np.uint8)  # any codes, code 3 included
    d = (rng.standard_normal((8, 4)) * 3).astype("<f2")
    raw.reshape(8, 4, 18)[..., :2] = d[..., None].view(np.uint8)
    assert np.array_equal(q2.dequantize(raw), dequantize_rows(q2.GGML_TYPE, raw, 256))


def llama_quantize(src, dst, ggml_type: int, ftype: int) -> None:
    """llama.cpp's quantize tool: every matrix to ``ggml_type`` (pure, embeddings and head too)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.output_tensor_type = ggml_type
    params.token_embedding_type = ggml_type
    params.pure = True
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0



def assert_rounded_as_llama_cpp(ours, ref, src, ggml_type: int, ftype: int, n_rounded: int) -> None:
    """A file we rounded from the float file ``src`` equals llama.cpp's rounding ``ref`` tensor for
    tensor: ``n_rounded`` matrices of ``ggml_type`` with the same bytes, the norms kept as they were,
    every metadata key kept and the file type ``ftype`` (llama.cpp also records its quantization
    version)."""
    a, b, f = GGUFFile(ours), GGUFFile(ref), GGUFFile(src)
    assert set(a.tensors) == set(b.tensors) == set(f.tensors)
    rounded = 0
    for name, rec in a.tensors.items():
        other = b.tensors[name]
        assert (rec.ggml_type, rec.shape) == (other.ggml_type, other.shape), name
        assert np.array_equal(a.raw(name), b.raw(name)), name
        if rec.ggml_type == ggml_type:
            rounded += 1
        else:
            assert name.endswith("_norm.weight") and np.array_equal(a.raw(name), f.raw(name))
    assert rounded == n_rounded
    theirs = {k: v for k, v in b.metadata.items() if k != "general.quantization_version"}
    assert dict(a.metadata) == theirs and a.metadata["general.file_type"] == ftype

@pytest.mark.llama
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_quantizer_bytes_equal_llama_cpp(tmp_path, seed):
    """llama.cpp's quantize of an F32 file to Q2_0, read by our parser, equals our quantizer
    byte for byte: random weights, an all-zero block and blocks with ties at w = amax / 2."""
    tok = fixture_tokenizer_metadata(512)
    cfg = ModelConfig(n_layer=2, hidden=128, ffn=384, n_head=4, n_kv_head=2, head_dim=32,
                      vocab_size=len(tok["tokenizer.ggml.tokens"]), tied_embeddings=False)
    weights = random_weights(cfg, seed=seed)
    weights["blk.0.ffn_up.weight"][3, :64] = 0.0
    tie = weights["blk.1.ffn_down.weight"]
    tie[5, 64:128] = np.float32(0.25) * np.where(np.arange(64) % 2, 1, -1)
    tie[5, 64] = 0.5  # amax 0.5: every ±0.25 is a tie, rounded away from zero
    tie[6, :64] = edge_rows()[2]
    f32 = write_model(tmp_path / "f32.gguf", cfg, weights, tok, quantize=False)
    llama_quantize(f32, tmp_path / "q2.gguf", q2.GGML_TYPE, q2.LLAMA_FTYPE)
    ref = GGUFFile(tmp_path / "q2.gguf")
    assert ref.metadata["general.file_type"] == q2.LLAMA_FTYPE
    checked = 0
    for name, w in weights.items():
        rec = ref.tensors[name]
        if rec.ggml_type != q2.GGML_TYPE:
            assert name.endswith("_norm.weight")
            continue
        assert rec.nbytes == w.size // 64 * 18
        assert np.array_equal(ref.raw(name), q2.quantize(w)), name
        checked += 1
    assert checked == 2 + 7 * cfg.n_layer


# ---------------------------------------------------------------------------- moves

# each group move as a permutation of the four codes (-d, 0, +d, +2d): two of {-1, 0, +1} swapped
PERMUTATION = {"negate": [2, 1, 0, 3], "zero_plus": [0, 2, 1, 3], "zero_minus": [1, 0, 2, 3]}


def test_group_moves_hand_block():
    block = np.zeros(18, dtype=np.uint8)
    block[:2] = np.frombuffer(F16_ONE, dtype=np.uint8)
    block[2:] = 0b11_10_01_00  # codes 0, 1, 2, 3 four times over
    for kind, byte, weights in (("negate", 0b11_00_01_10, [1.0, 0.0, -1.0, 2.0]),
                                ("zero_plus", 0b11_01_10_00, [-1.0, 1.0, 0.0, 2.0]),
                                ("zero_minus", 0b11_10_00_01, [0.0, -1.0, 1.0, 2.0])):
        moved = block.copy()
        q2.apply_move(moved, kind)
        assert (moved[2:] == byte).all() and moved[:2].tobytes() == F16_ONE, kind
        assert q2.dequantize(moved.reshape(1, 18))[0, :4].tolist() == weights, kind
        q2.apply_move(moved, kind)
        assert np.array_equal(moved, block), kind


@pytest.mark.parametrize("kind", q2.GROUP_MOVES)
def test_group_moves_on_every_byte(kind):
    """On all 256 bytes: each move permutes each of the four codes as its transposition says,
    and is an involution."""
    every = np.arange(256, dtype=np.uint8)
    moved = every ^ q2.code_mask(every, kind)
    want = q2.pack_codes(np.array(PERMUTATION[kind], dtype=np.uint8)[q2.unpack_codes(every[:, None])])[:, 0]
    assert np.array_equal(moved, want)
    assert np.array_equal(moved ^ q2.code_mask(moved, kind), every)
    t = torch.from_numpy(every.copy())
    assert np.array_equal((t ^ q2.code_mask(t, kind)).numpy(), moved)  # the same mask on torch bytes


def test_the_transpositions_generate_every_permutation():
    perms = {(0, 1, 2)}
    for _ in range(3):
        perms |= {tuple(PERMUTATION[k][c] for c in p) for p in perms for k in q2.GROUP_MOVES}
    assert len(perms) == 6


def test_negate_is_weight_negation_and_scale_bit_moves_the_scale():
    rng = np.random.default_rng(4)
    raw = q2.quantize(rng.standard_normal((2, 128)).astype(np.float32))
    base = q2.dequantize(raw)
    flat = raw.reshape(-1).copy()
    q2.move_group_bytes(flat, 3, "negate")  # group 3 = row 1, columns 64..127
    moved = q2.dequantize(flat.reshape(2, -1))
    assert np.array_equal(moved[1, 64:], -base[1, 64:]) and np.array_equal(moved[:, :64], base[:, :64])
    assert np.array_equal(moved[0], base[0])
    flat = raw.reshape(-1).copy()
    q2.move_group_bytes(flat, 2, "scale", 9)  # the top mantissa bit: d changes by half its exponent's unit
    d0, d1 = (float(x.reshape(-1, 18)[2, :2].view("<f2")[0]) for x in (raw, flat))
    assert abs(abs(d1 - d0) - 2.0 ** (np.floor(np.log2(d0)) - 1)) < 1e-12
    q2.move_group_bytes(flat, 2, "scale", 9)
    assert np.array_equal(flat, raw.reshape(-1))
    with pytest.raises(ValueError, match="not a Q2_0 group move"):
        q2.apply_move(flat[q2.block_bytes(0)], "group")
    with pytest.raises(ValueError, match="outside 0..15"):
        q2.apply_move(flat[q2.block_bytes(0)], "scale")


@pytest.mark.parametrize("cache", [torch.float32, None])
@pytest.mark.parametrize("kind", q2.GROUP_MOVES)
def test_linear_moves_self_inverse_and_cache_in_step(cache, kind):
    rng = np.random.default_rng(5)
    raw = torch.from_numpy(q2.quantize(rng.standard_normal((4, 192)).astype(np.float32)))
    lin = Q2Linear(raw.clone(), 192, cache_dtype=cache)
    assert lin.n_groups == 12
    base_w = lin.dense().clone()
    d = float(q2.scales_torch(raw)[2, 1])
    lin.move(7, kind)  # row 2, columns 64..127
    lin.move(1, "scale", 6)  # row 0, columns 64..127
    w = lin.dense()
    levels = torch.round(base_w[2, 64:128] / d).long()
    want = torch.tensor(PERMUTATION[kind]) - 1  # code c - 1 → the moved code - 1, by level
    assert torch.equal(w[2, 64:128], (want[levels + 1] * d).float())
    assert torch.equal(w, q2.dequantize_torch(lin.raw))  # the cache equals a full re-dequantization
    assert (w != base_w).nonzero()[:, 0].unique().tolist() == [0, 2]
    changed_cols = (w[2] != base_w[2]).nonzero()[:, 0]
    assert changed_cols.numel() and int(changed_cols.min()) >= 64 and int(changed_cols.max()) < 128
    lin.move(7, kind)
    lin.move(1, "scale", 6)
    assert torch.equal(lin.raw, raw) and torch.equal(lin.dense(), base_w)
    lin.move(0, kind)
    lin.xor_scale_bit(11, 4)
    lin.reset()
    assert torch.equal(lin.raw, raw) and torch.equal(lin.dense(), base_w) and not lin.touched
    with pytest.raises(IndexError):
        lin.move(12, kind)
    with pytest.raises(ValueError, match="'group' is not a Q2_0 move"):
        lin.move(0, "group")


def test_both_formats_share_the_names_the_engine_uses():
    from neagari.engine.quants import BLOCK_FORMATS, SHARED, format_named

    for fmt in BLOCK_FORMATS.values():
        assert all(hasattr(fmt, name) for name in SHARED), fmt.NAME
        assert fmt.GROUP_MOVE in fmt.MOVES and "scale" in fmt.MOVES
    assert format_named("q2_0") is q2
    with pytest.raises(ValueError, match="unknown block format 'q4_0'"):
        format_named("q4_0")
