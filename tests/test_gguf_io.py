"""GGUF reading and writing, and the one-line errors a user sees for bad files (via the CLI)."""

from __future__ import annotations

import numpy as np
import pytest

from neagari.engine import q1
from neagari.cli import main
from neagari.engine.config import ModelConfig, tensor_names
from neagari.engine.engine import Engine
from neagari.engine.fixtures import FixtureSpec, random_weights, write_fixture_model
from neagari.engine.gguf_io import GGUFFile, GGUFFormatError, write_gguf


def test_fixture_round_trip_through_reader(tmp_path):
    spec = FixtureSpec(n_layer=2, hidden=128, ffn=256, n_head=2, n_kv_head=1, head_dim=192,
                       tied_embeddings=False, seed=7)
    path = write_fixture_model(tmp_path / "m.gguf", spec)
    f = GGUFFile(path)
    cfg = ModelConfig.from_gguf(f)
    assert (cfg.n_layer, cfg.hidden, cfg.ffn, cfg.n_head, cfg.n_kv_head, cfg.head_dim) == (2, 128, 256, 2, 1, 192)
    assert not cfg.tied_embeddings and set(tensor_names(cfg)) == set(f.tensors)
    weights = random_weights(cfg, spec.seed)
    for name in ("blk.1.ffn_down.weight", "output.weight", "blk.0.attn_q.weight"):
        assert f.tensors[name].ggml_type == q1.GGML_TYPE_Q1_0
        assert np.array_equal(f.raw(name), q1.quantize(weights[name]))  # bytes exactly as quantized
        assert np.array_equal(f.dequantize(name), q1.dequantize(q1.quantize(weights[name])))
    assert np.array_equal(f.dequantize("blk.1.attn_k_norm.weight"), weights["blk.1.attn_k_norm.weight"])
    assert f.metadata["tokenizer.ggml.model"] == "gpt2"
    assert len(f.sha256()) == 64


def _write(path, tensors, arch="qwen3"):
    return write_gguf(path, arch, lambda w: None, tensors)


def test_errors_are_one_line(tmp_path, capsys, fixture_models):
    good = fixture_models["tied_gqa"]
    cases = {}
    (tmp_path / "text.gguf").write_text("hello, I am not a model\n")
    cases["text.gguf"] = "not a GGUF file"
    data = good.read_bytes()
    (tmp_path / "header.gguf").write_bytes(data[:3000])
    cases["header.gguf"] = "truncated"
    (tmp_path / "tail.gguf").write_bytes(data[: len(data) - 1000])
    cases["tail.gguf"] = "truncated"
    cases["missing.gguf"] = "no such file"
    for name, message in cases.items():
        assert main(["inspect", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, (name, err)
    # a GGUF without the model's metadata: the engine names the missing key
    write_gguf(tmp_path / "bare.gguf", "qwen3", lambda w: None,
               [("token_embd.weight", np.zeros((4, 128), dtype=np.float32), 0)])
    assert main(["generate", str(tmp_path / "bare.gguf"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing required metadata key 'qwen3.attention.head_count'" in err and "\n" not in err


def test_unsupported_type_and_row_length(tmp_path):
    path = tmp_path / "odd.gguf"
    import gguf

    writer_tensors = [("a.weight", np.zeros((2, 64), dtype=np.float32), 0)]
    _write(path, writer_tensors)
    f = GGUFFile(path)
    f.require_tensor("a.weight")  # F32, any row length is fine
    with pytest.raises(GGUFFormatError, match="missing required tensor 'b.weight'"):
        f.require_tensor("b.weight")
    # a Q4_0 tensor: a type we do not read
    w = gguf.GGUFWriter(tmp_path / "q40.gguf", "qwen3")
    w.add_tensor("c.weight", np.zeros((2, 18), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(GGUFFormatError, match="unsupported type 2"):
        GGUFFile(tmp_path / "q40.gguf").require_tensor("c.weight")


def test_engine_rejects_wrong_architecture(tmp_path):
    path = write_gguf(tmp_path / "llama.gguf", "llama", lambda w: None, [])
    with pytest.raises(GGUFFormatError, match="architecture 'llama' is not supported"):
        Engine.load(path)


def _reader_view(path):
    """Metadata and tensors as gguf-py's GGUFReader sees them (what GGUFFile returned before it
    parsed headers itself)."""
    import gguf

    r = gguf.GGUFReader(path)
    meta = {}
    for name, fl in r.fields.items():
        if not name.startswith("GGUF."):
            v = fl.contents()
            meta[name] = v.item() if isinstance(v, np.generic) else v
    tensors = {t.name: (int(t.tensor_type), tuple(reversed(t.shape.tolist())), int(t.data_offset), int(t.n_bytes))
               for t in r.tensors}
    return meta, tensors, r


def test_own_parser_matches_gguf_py(fixture_model):
    meta, tensors, r = _reader_view(fixture_model)
    f = GGUFFile(fixture_model)
    assert dict(f.metadata) == meta and list(f.metadata) == list(meta)
    assert all(type(f.metadata[k]) is type(v) for k, v in meta.items())
    assert {n: (t.ggml_type, t.shape, t.offset, t.nbytes) for n, t in f.tensors.items()} == tensors
    assert list(f.tensors) == [t.name for t in r.tensors]
    for t in r.tensors:
        assert np.array_equal(f.raw(t.name).reshape(-1), np.asarray(t.data).view(np.uint8).reshape(-1))


def test_typed_keys(fixture_models):
    f = GGUFFile(fixture_models["tied_gqa"])
    assert f.int_key("qwen3.block_count", lo=1) == 2
    assert f.float_key("qwen3.rope.freq_base") == 10000.0
    assert f.str_key("general.architecture") == "qwen3"
    with pytest.raises(GGUFFormatError, match=r"'qwen3.block_count' is 2, must be in 3..4"):
        f.int_key("qwen3.block_count", lo=3, hi=4)
    with pytest.raises(GGUFFormatError, match=r"'general.architecture' is a string, expected an integer"):
        f.int_key("general.architecture")
    with pytest.raises(GGUFFormatError, match=r"missing required metadata key 'no.such'"):
        f.float_key("no.such")
    assert f.int_key("no.such", 7) == 7


def test_check_finite_float_types(tmp_path):
    import gguf

    bad = np.ones((2, 4), dtype=np.float32)
    bad[1, 2] = np.nan
    w = gguf.GGUFWriter(tmp_path / "f.gguf", "qwen3")
    w.add_tensor("ok32.weight", np.ones((2, 4), dtype=np.float32))
    w.add_tensor("bad32.weight", bad)
    w.add_tensor("bad16.weight", bad.astype(np.float16))
    w.add_tensor("inf16.weight", np.full((2, 4), np.inf, dtype=np.float16))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    f = GGUFFile(tmp_path / "f.gguf")
    f.check_finite("ok32.weight")
    for name, n in (("bad32.weight", 1), ("bad16.weight", 1), ("inf16.weight", 8)):
        with pytest.raises(GGUFFormatError, match=rf"'{name}' has {n} non-finite \(inf/NaN\) value"):
            f.check_finite(name)


def test_directories_and_unreadable_files_are_one_line(tmp_path, capsys, fixture_models, monkeypatch):
    assert main(["inspect", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"neagari: error: {tmp_path}: is a directory, not a GGUF file"
    path = fixture_models["tied_gqa"]
    real_open = open

    def denied(file, *a, **k):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", denied)  # we may run as root, where chmod does not deny reads
    assert main(["inspect", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"neagari: error: {path}: cannot read (Permission denied)"
