"""The other Q2_0 layout under GGML type 42 (PrismML's llama.cpp fork: 128-weight blocks of 34
bytes) is refused in one line that says so, in hand-made files; files of the pinned llama.cpp's
layout (64-weight blocks of 18 bytes) read as before, and a damaged one is still called damaged."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from neagari.engine import q2
from neagari.engine.gguf_io import GGUFFile, GGUFFormatError

ROWS, COLS = 8, 256  # 16 blocks of 128 weights (544 bytes) or 32 of 64 (576 bytes)


def write(path: Path, tensors) -> Path:
    """A GGUF of (name, layout) tensors of ROWS x COLS: "g128" (34-byte blocks of 128) or "g64"
    (18-byte blocks of 64), both as type 42, or "f32"; gguf-py places each tensor's bytes as given."""
    w = gguf.GGUFWriter(path, "qwen3")
    rng = np.random.default_rng(0)
    for name, layout in tensors:
        if layout == "f32":
            w.add_tensor(name, np.ones((ROWS, COLS), np.float32))
            continue
        qk, nbytes = {"g128": (128, 34), "g64": (q2.QK, q2.BLOCK_BYTES)}[layout]
        data = rng.integers(0, 256, size=(ROWS, COLS // qk * nbytes), dtype=np.uint8)
        w.add_tensor(name, data.view(np.int8), raw_shape=(ROWS, COLS), raw_dtype=q2.GGML_TYPE)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def refusal(path: Path) -> str:
    with pytest.raises(GGUFFormatError) as err:
        GGUFFile(path)
    return str(err.value)


@pytest.mark.parametrize("tensors, named", [
    ([("token_embd.weight", "g128"), ("blk.0.attn_norm.weight", "f32"), ("output.weight", "g128")], "token_embd.weight"),
    ([("blk.0.attn_norm.weight", "f32"), ("output.weight", "g128")], "output.weight"),  # the last: up to the end
    ([("output.weight", "g128")], "output.weight"),
])
def test_the_128_weight_layout_is_refused_in_one_line(tmp_path, tensors, named):
    path = write(tmp_path / "g128.gguf", tensors)
    msg = refusal(path)
    assert "\n" not in msg and msg.startswith(f"{path}: tensor {named!r} ([256, 8], Q2_0, type 42)")
    assert "PrismML's llama.cpp fork, 128-weight blocks of 34 bytes (544 bytes" in msg
    assert "not in ggml's 64-weight blocks of 18 bytes (576 bytes)" in msg
    assert msg.endswith("the pinned llama.cpp (llama-cpp-python 0.3.36) reads only the 64-weight layout, "
                        "as does this reader")


def test_the_64_weight_layout_reads(tmp_path):
    path = write(tmp_path / "g64.gguf", [("token_embd.weight", "g64"), ("blk.0.attn_norm.weight", "f32"),
                                         ("output.weight", "g64")])
    f = GGUFFile(path)
    assert [f.tensors[n].nbytes for n in ("token_embd.weight", "output.weight")] == [576, 576]
    assert f.dequantize("output.weight").shape == (ROWS, COLS)


def test_other_damage_keeps_its_own_message(tmp_path):
    """A truncated 64-weight file is truncated, not the other layout: the bytes its last tensor has
    left hold neither layout."""
    path = write(tmp_path / "g64.gguf", [("blk.0.attn_norm.weight", "f32"), ("output.weight", "g64")])
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:-100])  # 476 of its 576 bytes left, fewer than the 544 of 128-weight blocks
    msg = refusal(cut)
    assert msg.startswith(f"{cut}: truncated file: tensor 'output.weight'") and "PrismML" not in msg
    # short of the 64-weight layout, in rows that 128-weight blocks cannot tile: no other layout either
    w = gguf.GGUFWriter(tmp_path / "odd.gguf", "qwen3")
    w.add_tensor("output.weight", np.zeros((ROWS, 3 * 17), np.int8), raw_shape=(ROWS, 3 * q2.QK),
                 raw_dtype=q2.GGML_TYPE)  # 17 bytes for each block of 64 weights
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    msg = refusal(tmp_path / "odd.gguf")
    assert "truncated file: tensor 'output.weight'" in msg and "PrismML" not in msg
