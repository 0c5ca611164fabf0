"""Patches of Q2_0 moves: records that name the tensor type, refusal of a move on the other
format, and apply-patch on a mixed Q1_0/Q2_0 file against a brute-force reference, applied twice
(restoring the base byte for byte) and against the bytes the engine holds after the same moves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neagari.cli import main
from neagari.engine import q2
from neagari.engine.config import ModelConfig
from neagari.engine.engine import Engine
from neagari.engine.export import write_model
from neagari.engine.fixtures import fixture_tokenizer_metadata, random_weights
from neagari.engine.gguf_io import GGUFFile
from neagari.hashing import sha256_file
from neagari.search.patch import (Move, Patch, PatchError, apply_patch_files, read_patch, sha256_after_moves,
                                  validate_moves, write_patch)

UP, GATE, DOWN = "ffn_up.weight", "ffn_gate.weight", "ffn_down.weight"
# block 0's MLP ternary, block 1's 1-bit
TYPES = {f"blk.0.{p}": q2.GGML_TYPE for p in (UP, GATE, DOWN)}
# each group move as a map of the four codes, from the docstring of neagari.engine.q2
PERMUTATION = {"negate": (2, 1, 0, 3), "zero_plus": (0, 2, 1, 3), "zero_minus": (1, 0, 2, 3)}

MOVES = [
    Move(0, UP, 5, "negate"), Move(0, UP, 5, "zero_plus"), Move(0, UP, 5, "scale", 7, "Q2_0"),
    Move(0, UP, 5, "negate"),  # negate and zero_plus do not commute: order matters
    Move(0, DOWN, 0, "zero_minus"), Move(0, GATE, 63, "zero_plus"), Move(1, DOWN, 3, "group"),
    Move(1, UP, 9, "scale", 4), Move(0, UP, 6, "zero_minus"), Move(0, UP, 6, "zero_minus"),
]


@pytest.fixture
def base(tmp_path) -> Path:
    tok = fixture_tokenizer_metadata(512)
    cfg = ModelConfig(n_layer=2, hidden=128, ffn=256, n_head=4, n_kv_head=2, head_dim=32,
                      vocab_size=len(tok["tokenizer.ggml.tokens"]))
    return write_model(tmp_path / "base.gguf", cfg, random_weights(cfg, seed=3), tok, tensor_types=TYPES)


def brute_force_bytes(path: Path, moves) -> bytes:
    """The file with ``moves`` applied one by one from the block layouts written out here: 18-byte
    blocks, bytes 0-1 the fp16 scale; Q1_0 bytes 2-17 are 128 sign bits, Q2_0 bytes 2-17 are 64
    two-bit codes, weight j at bits 2 (j % 4) of byte 2 + j // 4."""
    data = bytearray(path.read_bytes())
    f = GGUFFile(path)
    for m in moves:
        start = f.tensors[m.tensor].offset + 18 * m.group
        if m.type == "scale":
            data[start + m.bit // 8] ^= 1 << (m.bit % 8)
        elif m.type == "group":
            for i in range(start + 2, start + 18):
                data[i] ^= 0xFF
        else:
            for j in range(64):
                i, shift = start + 2 + j // 4, 2 * (j % 4)
                code = PERMUTATION[m.type][(data[i] >> shift) & 3]
                data[i] = (data[i] & ~(3 << shift) & 0xFF) | (code << shift)
    return bytes(data)


def test_records_name_the_tensor_type():
    assert Move(0, UP, 3, "negate").to_record() == {"layer": 0, "proj": UP, "group": 3, "type": "negate",
                                                    "tensor_type": "Q2_0"}
    scale = Move(0, UP, 3, "scale", 5, "Q2_0")
    assert scale.to_record()["tensor_type"] == "Q2_0" and Move.from_record(scale.to_record()) == scale
    assert "tensor_type" not in Move(0, UP, 3, "group").to_record()  # Q1_0: upstream's layout
    assert Move.from_record({"layer": 0, "proj": UP, "group": 3, "type": "scale", "bit": 5}).tensor_type == "Q1_0"
    assert Move(0, UP, 3, "zero_plus").describe() == "zero_plus flip of blk.0.ffn_up.weight group 3 on Q2_0"
    for rec, message in [({"type": "negate", "tensor_type": "Q1_0"}, "a negate move does not act on Q1_0 groups"),
                         ({"type": "group", "tensor_type": "Q2_0"}, "a group move does not act on Q2_0 groups"),
                         ({"type": "scale", "bit": 4, "tensor_type": "Q4_0"}, "tensor_type must be one of Q1_0, Q2_0")]:
        with pytest.raises(PatchError, match=message):
            Move.from_record({"layer": 0, "proj": UP, "group": 3, **rec})


def test_a_move_of_the_other_format_is_refused(base, tmp_path):
    f = GGUFFile(base)
    validate_moves(f, MOVES)
    for move, message in [
        (Move(1, DOWN, 0, "negate"), r"^flip 0 \(negate flip of blk.1.ffn_down.weight group 0 on Q2_0\): "
                                     r"tensor blk.1.ffn_down.weight is Q1_0, not Q2_0$"),
        (Move(0, DOWN, 0, "group"), r"^flip 0 \(group flip of blk.0.ffn_down.weight group 0\): "
                                    r"tensor blk.0.ffn_down.weight is Q2_0, not Q1_0$"),
        (Move(0, DOWN, 0, "scale", 4), "is Q2_0, not Q1_0"),  # a Q1_0 scale move (no tensor_type)
        (Move(0, UP, 512, "negate"), "group out of range, blk.0.ffn_up.weight has 512 groups"),
        (Move(0, UP, 0, "scale", 12, "Q2_0"), "scale bit 12 is not a mantissa bit"),
    ]:
        with pytest.raises(PatchError, match=message):
            validate_moves(f, [move])
    patch = write_patch(tmp_path / "bad.json", Patch(moves=[Move(1, DOWN, 0, "negate")], base_sha256=f.sha256()))
    with pytest.raises(PatchError, match="is Q1_0, not Q2_0"):
        apply_patch_files(base, tmp_path / "out.gguf", [patch])
    assert not (tmp_path / "out.gguf").exists()


def test_apply_twice_restores_the_base(base, tmp_path, capsys):
    patched_sha = sha256_after_moves(base, GGUFFile(base), MOVES)
    patch = Patch(moves=MOVES, base_sha256=sha256_file(base), patched_sha256=patched_sha)
    path = write_patch(tmp_path / "p.json", patch)
    assert read_patch(path).moves == MOVES
    out = tmp_path / "out.gguf"
    assert main(["apply-patch", "--base", str(base), "--out", str(out), str(path)]) == 0
    assert out.read_bytes() == brute_force_bytes(base, MOVES) and sha256_file(out) == patched_sha
    assert out.read_bytes() != brute_force_bytes(base, [MOVES[1], MOVES[0]] + MOVES[2:])  # order matters
    back = tmp_path / "back.gguf"
    assert main(["apply-patch", "--base", str(out), "--out", str(back), str(path)]) == 0  # undoes it
    assert back.read_bytes() == base.read_bytes()
    capsys.readouterr()


def test_engine_holds_the_bytes_apply_patch_writes(base, tmp_path):
    path = write_patch(tmp_path / "p.json", Patch(moves=MOVES, base_sha256=sha256_file(base)))
    apply_patch_files(base, tmp_path / "out.gguf", [path])
    out = GGUFFile(tmp_path / "out.gguf")
    eng = Engine.load(base)
    for m in MOVES:
        eng.move(m.tensor, m.group, m.type, m.bit)
    for name in {m.tensor for m in MOVES}:
        lin = eng.linear(name)
        assert np.array_equal(lin.raw.numpy(), out.raw(name)), name
        assert torch.equal(lin.dense(), lin.fmt.dequantize_torch(lin.raw)), name  # the cache in step
    eng.reset()
    assert all(np.array_equal(eng.linear(n).raw.numpy(), GGUFFile(base).raw(n)) for n in {m.tensor for m in MOVES})
