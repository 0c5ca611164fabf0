"""Q2_0 in GGUF files: reading, writing, refusals, ``neagari inspect``, and post-hoc rounding of
a float file to Q2_0 byte-equal to llama.cpp's quantizer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neagari.cli import main
from neagari.engine import q1, q2
from neagari.engine.config import ModelConfig
from neagari.engine.engine import Engine
from neagari.engine.export import write_model
from neagari.engine.fixtures import fixture_tokenizer_metadata, random_weights
from neagari.engine.gguf_io import TYPE_F16, TYPE_F32, GGUFFile, GGUFFormatError, write_gguf
from neagari.engine.requantize import quantize_gguf
from neagari.hashing import sha256_file
from test_q2 import assert_rounded_as_llama_cpp, llama_quantize


def _meta(w):
    w.add_uint32("qwen3.block_count", 1)


def test_write_and_read_back(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 192)).astype(np.float32)
    blocks = q2.quantize(w)
    path = write_gguf(tmp_path / "t.gguf", "qwen3", _meta,
                      [("a.weight", blocks, q2.GGML_TYPE), ("b.weight", q1.quantize(w[:, :128]), q1.GGML_TYPE),
                       ("n.weight", np.ones(192, dtype=np.float32), TYPE_F32)])
    f = GGUFFile(path)
    a = f.tensors["a.weight"]
    assert (a.ggml_type, a.type_name, a.shape, a.nbytes) == (42, "Q2_0", (6, 192), 6 * 3 * 18)
    assert np.array_equal(f.raw("a.weight"), blocks)
    assert np.array_equal(f.dequantize("a.weight"), q2.dequantize(blocks))
    assert f.summary()["types"] == {"Q2_0": 1, "Q1_0": 1, "F32": 1}
    f.check_finite("a.weight")
    with pytest.raises(ValueError, match=r"Q2_0 blocks must be uint8 \(out, n \* 18\)"):
        write_gguf(tmp_path / "bad.gguf", "qwen3", _meta, [("a.weight", blocks[:, :20], q2.GGML_TYPE)])


def test_refusals_row_length_and_nonfinite_scale(tmp_path):
    import gguf

    w = gguf.GGUFWriter(tmp_path / "odd.gguf", "qwen3")
    w.add_tensor("a.weight", np.zeros((2, 27), dtype=np.int8), raw_shape=(2, 96), raw_dtype=q2.GGML_TYPE)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(GGUFFormatError, match="row length 96 is not a multiple of its type's block size 64"):
        GGUFFile(tmp_path / "odd.gguf")

    blocks = q2.quantize(np.ones((2, 128), dtype=np.float32))
    blocks[1, 18:20] = np.array([np.inf], dtype="<f2").view(np.uint8)  # block 3's scale
    blocks[0, 0:2] = np.array([np.nan], dtype="<f2").view(np.uint8)  # block 0's
    f = GGUFFile(write_gguf(tmp_path / "inf.gguf", "qwen3", _meta, [("a.weight", blocks, q2.GGML_TYPE)]))
    with pytest.raises(GGUFFormatError, match=r"'a.weight' has 2 non-finite \(inf/NaN\) block scales, the first at"):
        f.check_finite("a.weight")


def float_file(tmp_path, float_type=TYPE_F32):
    tok = fixture_tokenizer_metadata(512)
    cfg = ModelConfig(n_layer=2, hidden=128, ffn=384, n_head=4, n_kv_head=2, head_dim=32,
                      vocab_size=len(tok["tokenizer.ggml.tokens"]), tied_embeddings=False)
    weights = random_weights(cfg, seed=21)
    weights["blk.0.ffn_up.weight"][3, 64:128] = 0.0  # an all-zero block
    weights["blk.1.ffn_gate.weight"][2, :64] = np.float32(0.125) * np.where(np.arange(64) % 2, 1, -1)
    weights["blk.1.ffn_gate.weight"][2, 0] = 0.25  # ties at w = amax / 2
    path = write_model(tmp_path / f"float{float_type}.gguf", cfg, weights, tok, name="fp-test", quantize=False,
                       float_type=float_type, extra_metadata={"neagari.training.variant": "fp"})
    return path, cfg, weights, tok


@pytest.mark.llama
@pytest.mark.parametrize("float_type", [TYPE_F32, TYPE_F16], ids=["F32", "F16"])
def test_posthoc_q2_equals_llama_cpp_quantize(tmp_path, float_type):
    src, *_ = float_file(tmp_path, float_type)
    ours, ref = tmp_path / "ours.gguf", tmp_path / "llama.gguf"
    quantize_gguf(src, ours, q2.GGML_TYPE)
    llama_quantize(src, ref, q2.GGML_TYPE, q2.LLAMA_FTYPE)
    assert_rounded_as_llama_cpp(ours, ref, src, q2.GGML_TYPE, q2.LLAMA_FTYPE, n_rounded=2 + 7 * 2)


def test_posthoc_q2_equals_the_direct_export_and_loads(tmp_path):
    """Rounding an F32 file to Q2_0 gives the file write_model exports as Q2_0 from the same
    weights, byte for byte; and the engine and llama.cpp load it."""
    src, cfg, weights, tok = float_file(tmp_path)
    out = quantize_gguf(src, tmp_path / "q2.gguf", q2.GGML_TYPE)
    direct = write_model(tmp_path / "direct.gguf", cfg, weights, tok, name="fp-test", block_type=q2.GGML_TYPE,
                         extra_metadata={"neagari.training.variant": "fp"})
    assert sha256_file(out) == sha256_file(direct)
    eng = Engine.load(out)
    gate = weights["blk.1.ffn_gate.weight"]
    assert np.array_equal(eng.weight("blk.1.ffn_gate.weight").numpy(), q2.dequantize(q2.quantize(gate)))
    llama_cpp = pytest.importorskip("llama_cpp")
    model = llama_cpp.Llama(model_path=str(out), n_ctx=64, verbose=False, n_threads=1)
    assert model.n_vocab() == cfg.vocab_size


def test_quantize_and_inspect_commands(tmp_path, capsys):
    src, *_ = float_file(tmp_path, TYPE_F16)
    out = tmp_path / "q2.gguf"
    assert main(["quantize", str(src), "--out", str(out), "--type", "q2_0"]) == 0
    assert sha256_file(out) == sha256_file(quantize_gguf(src, tmp_path / "again.gguf", q2.GGML_TYPE))
    capsys.readouterr()
    assert main(["quantize", str(out), "--out", str(tmp_path / "x.gguf"), "--type", "q2_0"]) == 2
    assert "is Q2_0, not float (F32, F16 or BF16): only a float file is rounded to Q2_0" in capsys.readouterr().err
    assert main(["inspect", str(out), "--tensors"]) == 0
    text = capsys.readouterr().out
    assert "'Q2_0': 16" in text and "blk.0.ffn_down.weight" in text
    assert any(line.split()[:2] == ["blk.0.ffn_down.weight", "Q2_0"] for line in text.splitlines())
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    down = next(t for t in info["tensors"] if t["name"] == "blk.0.ffn_down.weight")
    assert down == {"name": "blk.0.ffn_down.weight", "type": "Q2_0", "shape": [128, 384], "bytes": 128 * 6 * 18}
