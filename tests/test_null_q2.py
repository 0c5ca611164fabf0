"""The null model of a ternary (Q2_0) model (neagari.search.null): what each mode redraws, what it
keeps byte for byte, the shares it reports, and a Q1_0 model's null byte for byte the 1-bit null
(each MLP sign bit XOR-ed with a fair coin), whatever the mode."""

from __future__ import annotations

import dataclasses
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHAPES
from neagari.engine import q1, q2
from neagari.engine.config import ModelConfig
from neagari.engine.export import write_model
from neagari.engine.fixtures import fixture_tokenizer_metadata, random_weights, write_fixture_model
from neagari.engine.gguf_io import GGUFFile
from neagari.hashing import sha256_file
from neagari.search.null import NULL_MODES, code_counts, mlp_tensors, randomize_mlp, randomize_mlp_signs
from test_engine_q2 import MIXED

REPO = Path(__file__).resolve().parents[1]
SIGMAS = 5  # bounds on binomial counts: within 5 standard deviations


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nullq2")
    spec = SHAPES["tied_gqa"]
    out = {"q1": write_fixture_model(root / "q1.gguf", spec),
           "q2": write_fixture_model(root / "q2.gguf", dataclasses.replace(spec, block_type=q2.GGML_TYPE))}
    tok = fixture_tokenizer_metadata(512)
    cfg = ModelConfig(n_layer=2, hidden=128, ffn=256, n_head=4, n_kv_head=2, head_dim=32,
                      vocab_size=len(tok["tokenizer.ggml.tokens"]), tied_embeddings=False)
    out["mixed"] = write_model(root / "mixed.gguf", cfg, random_weights(cfg, seed=7), tok, tensor_types=MIXED)
    return out


def old_null(base: Path, out: Path, seed: int) -> str:
    """The 1-bit null written out on its own: every Q1_0 MLP sign bit XOR-ed with a fair coin from
    PCG64(seed), one random byte per 8 bits, tensors in name order."""
    f = GGUFFile(base)
    tensors = sorted((r for r in f.tensors.values()
                      if r.ggml_type == q1.GGML_TYPE and r.name.split(".")[-2] in ("ffn_gate", "ffn_up", "ffn_down")),
                     key=lambda r: r.name)
    shutil.copyfile(base, out)
    mm = np.memmap(out, dtype=np.uint8, mode="r+")
    rng = np.random.Generator(np.random.PCG64(seed))
    for rec in tensors:
        blocks = mm[rec.offset : rec.offset + rec.nbytes].reshape(-1, q1.BLOCK_BYTES)
        blocks[:, q1.SIGN_BYTES] ^= rng.integers(0, 256, size=(blocks.shape[0], q1.QK // 8), dtype=np.uint8)
    mm.flush()
    del mm
    return sha256_file(out)


def codes_of(path: Path) -> dict[str, np.ndarray]:
    """Every Q2_0 MLP tensor's codes, (blocks, 64) uint8."""
    f = GGUFFile(path)
    return {r.name: q2.unpack_codes(np.asarray(f.raw(r.name)).reshape(-1, q2.BLOCK_BYTES)[:, q2.CODE_BYTES])
            for r in mlp_tensors(f, q2.GGML_TYPE)}


def changed_bytes(a: Path, b: Path) -> np.ndarray:
    """Indices of the bytes in which two files of one size differ."""
    x, y = np.fromfile(a, np.uint8), np.fromfile(b, np.uint8)
    assert x.size == y.size
    return np.flatnonzero(x != y)


def code_byte_positions(path: Path) -> np.ndarray:
    """File offsets of every code byte of the Q2_0 MLP tensors (what a ternary null may change)."""
    f = GGUFFile(path)
    spans = []
    for rec in mlp_tensors(f, q2.GGML_TYPE):
        starts = rec.offset + np.arange(rec.nbytes // q2.BLOCK_BYTES) * q2.BLOCK_BYTES
        spans.append((starts[:, None] + np.arange(q2.CODE_BYTES.start, q2.CODE_BYTES.stop)).reshape(-1))
    return np.concatenate(spans)


def within(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) < SIGMAS * np.sqrt(n * p * (1 - p))


# ---------------------------------------------------------------------------- Q1_0: as it was


@pytest.mark.parametrize("mode", NULL_MODES)
def test_q1_null_is_the_one_bit_null_byte_for_byte(models, tmp_path, mode):
    for seed in (0, 42):
        want = old_null(models["q1"], tmp_path / f"old-{seed}.gguf", seed)
        null = randomize_mlp(models["q1"], tmp_path / f"new-{seed}.gguf", seed, mode)
        assert null.sha256 == want == sha256_file(tmp_path / f"new-{seed}.gguf")
        assert (null.q1_tensors, null.q2_tensors, null.trained_zero_share, null.null_zero_share) == (6, 0, None, None)
    assert randomize_mlp_signs(models["q1"], tmp_path / "w.gguf", 0) == sha256_file(tmp_path / "old-0.gguf")


def test_mixed_model_q1_tensors_as_the_one_bit_null(models, tmp_path):
    """The Q2_0 tensors' draws come from a stream of their own: the Q1_0 MLP tensors of a mixed
    model get exactly the bytes the 1-bit null gives them."""
    old_null(models["mixed"], tmp_path / "old.gguf", 3)
    null = randomize_mlp(models["mixed"], tmp_path / "new.gguf", 3)
    assert (null.q1_tensors, null.q2_tensors) == (3, 3)
    a, b = GGUFFile(tmp_path / "old.gguf"), GGUFFile(tmp_path / "new.gguf")
    for name, rec in a.tensors.items():
        same = np.array_equal(a.raw(name), b.raw(name))
        assert same == (name not in {r.name for r in mlp_tensors(a, q2.GGML_TYPE)}), name


# ---------------------------------------------------------------------------- Q2_0


@pytest.mark.parametrize("mode", NULL_MODES)
def test_only_mlp_code_bytes_change(models, tmp_path, mode):
    """Header, metadata, norms, attention, embeddings and every block scale keep their bytes; only
    code bytes of the Q2_0 MLP tensors may differ."""
    out = tmp_path / "null.gguf"
    randomize_mlp(models["q2"], out, 7, mode)
    assert set(changed_bytes(models["q2"], out)) <= set(code_byte_positions(models["q2"]))
    a, b = GGUFFile(models["q2"]), GGUFFile(out)
    assert dict(a.metadata) == dict(b.metadata)
    mlp = {r.name for r in mlp_tensors(a, q2.GGML_TYPE)}
    assert len(mlp) == 6 and any(r.ggml_type == q2.GGML_TYPE and n not in mlp for n, r in a.tensors.items())
    for name in a.tensors:
        ra, rb = np.asarray(a.raw(name)), np.asarray(b.raw(name))
        if name in mlp:
            blocks_a, blocks_b = ra.reshape(-1, q2.BLOCK_BYTES), rb.reshape(-1, q2.BLOCK_BYTES)
            assert np.array_equal(blocks_a[:, q2.SCALE_BYTES], blocks_b[:, q2.SCALE_BYTES]), name
            assert not np.array_equal(ra, rb), name
        else:
            assert np.array_equal(ra, rb), name


def test_uniform_draws_the_three_codes_alike(models, tmp_path):
    out = tmp_path / "null.gguf"
    null = randomize_mlp(models["q2"], out, 11, "uniform")
    before, after = codes_of(models["q2"]), codes_of(out)
    codes = np.concatenate([c.reshape(-1) for c in after.values()])
    n = codes.size
    assert n == null.q2_weights == 6 * 128 * 256
    counts = np.bincount(codes, minlength=4)
    assert counts[q2.TWO] == 0  # code 3 (+2d) is never written
    assert all(within(int(counts[c]), n, 1 / 3) for c in (q2.MINUS, q2.ZERO, q2.PLUS)), counts
    # the trained file's zero share is far from a third (llama.cpp rounds most Gaussian weights to 0)
    trained = np.concatenate([c.reshape(-1) for c in before.values()])
    assert (trained == q2.ZERO).mean() > 0.6
    assert null.trained_zero_share == (trained == q2.ZERO).mean() and null.null_zero_share == counts[q2.ZERO] / n
    assert null.null_two_share == 0 and null.null_plus_share == counts[q2.PLUS] / (counts[q2.PLUS] + counts[q2.MINUS])
    # each weight drawn afresh: it keeps its trained code about a third of the time
    assert within(int((trained == codes).sum()), n, 1 / 3)


def test_keep_zeros_redraws_only_the_signs(models, tmp_path):
    out = tmp_path / "null.gguf"
    null = randomize_mlp(models["q2"], out, 5, "keep_zeros")
    before, after = codes_of(models["q2"]), codes_of(out)
    for name in before:
        assert np.array_equal(before[name] == q2.ZERO, after[name] == q2.ZERO), name  # the zero pattern
    a = np.concatenate([c.reshape(-1) for c in before.values()])
    b = np.concatenate([c.reshape(-1) for c in after.values()])
    nonzero = a != q2.ZERO
    m = int(nonzero.sum())
    assert set(np.unique(b[nonzero])) <= {q2.MINUS, q2.PLUS}
    assert within(int((a[nonzero] != b[nonzero]).sum()), m, 1 / 2)  # each sign flipped with probability 1/2
    assert within(int((b[nonzero] == q2.PLUS).sum()), m, 1 / 2)  # and so balanced
    assert null.trained_zero_share == null.null_zero_share == (a == q2.ZERO).mean()
    assert null.null_plus_share == (b[nonzero] == q2.PLUS).mean()


def test_code_three_is_kept_by_keep_zeros_and_replaced_by_uniform(models, tmp_path):
    """A +2d weight (code 3, which llama.cpp never writes) has no negation: keep_zeros leaves it,
    uniform draws over the ternary codes only."""
    base = tmp_path / "two.gguf"
    shutil.copyfile(models["q2"], base)
    rec = GGUFFile(base).tensors["blk.1.ffn_up.weight"]
    mm = np.memmap(base, dtype=np.uint8, mode="r+")
    blocks = mm[rec.offset : rec.offset + rec.nbytes].reshape(-1, q2.BLOCK_BYTES)
    blocks[::3, q2.CODE_BYTES.start] |= 0b11  # weight 0 of every third block: code 3
    mm.flush()
    del mm
    twos = codes_of(base)["blk.1.ffn_up.weight"] == q2.TWO
    assert twos.sum() == -(-blocks.shape[0] // 3)
    randomize_mlp(base, tmp_path / "k.gguf", 1, "keep_zeros")
    assert np.array_equal(codes_of(tmp_path / "k.gguf")["blk.1.ffn_up.weight"] == q2.TWO, twos)
    null = randomize_mlp(base, tmp_path / "u.gguf", 1, "uniform")
    assert not any((c == q2.TWO).any() for c in codes_of(tmp_path / "u.gguf").values())
    assert null.trained_two_share == twos.sum() / null.q2_weights and null.null_two_share == 0


@pytest.mark.parametrize("mode", NULL_MODES)
def test_one_file_per_seed(models, tmp_path, mode):
    a = randomize_mlp(models["q2"], tmp_path / "a.gguf", 9, mode)
    b = randomize_mlp(models["q2"], tmp_path / "b.gguf", 9, mode)
    c = randomize_mlp(models["q2"], tmp_path / "c.gguf", 10, mode)
    assert a == b and a.sha256 != c.sha256
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


def test_code_counts_of_packed_bytes():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(50, 64), dtype=np.uint8)
    assert code_counts(q2.pack_codes(codes)).tolist() == np.bincount(codes.reshape(-1), minlength=4).tolist()


def test_refusals(models, tmp_path):
    with pytest.raises(ValueError, match="null mode 'signs': expected one of uniform, keep_zeros"):
        randomize_mlp(models["q2"], tmp_path / "x.gguf", 0, "signs")
    assert not (tmp_path / "x.gguf").exists()
    tok = fixture_tokenizer_metadata(512)
    cfg = ModelConfig(n_layer=1, hidden=128, ffn=256, n_head=4, n_kv_head=2, head_dim=32,
                      vocab_size=len(tok["tokenizer.ggml.tokens"]))
    dense = {f"blk.0.{p}.weight": 1 for p in ("ffn_gate", "ffn_up", "ffn_down")}  # F16 MLP
    path = write_model(tmp_path / "f16mlp.gguf", cfg, random_weights(cfg, 0), tok, tensor_types=dense)
    with pytest.raises(ValueError, match="no Q1_0 or Q2_0 MLP tensors to randomize"):
        randomize_mlp(path, tmp_path / "y.gguf", 0)
    assert not list(tmp_path.glob("y.gguf*"))


# ---------------------------------------------------------------------------- the rule's script


def _script_run(monkeypatch, work: Path, model: Path, params: dict) -> tuple[dict, str]:
    """scripts/randomize_null_model.py as Snakemake runs it, in ``work``; (its provenance record, its log)."""
    from snakemake.iocontainers import Namedlist, Params

    work.mkdir()
    monkeypatch.chdir(work)
    out, log = Path("results/models/null/m-s4.gguf"), Path("logs/models/null/m-s4.log")
    out.parent.mkdir(parents=True)
    log.parent.mkdir(parents=True)
    smk = type("Snakemake", (), {})()
    smk.input, smk.output = Namedlist(fromdict={"model": str(model)}), Namedlist(fromdict={"gguf": str(out)})
    smk.params, smk.wildcards = Params(fromdict=params), Namedlist(fromdict={"model": "m", "seed": "4"})
    smk.log, smk.rule, smk.config, smk.threads = Namedlist([str(log)]), "randomize_null_model", {}, 1
    runpy.run_path(str(REPO / "scripts/randomize_null_model.py"), init_globals={"snakemake": smk})
    return json.loads(Path(str(out) + ".prov.json").read_text()), log.read_text()


def test_rule_records_the_zero_shares(models, tmp_path, monkeypatch):
    rec, log = _script_run(monkeypatch, tmp_path / "a", models["q2"], {"mode": "keep_zeros"})
    extra = rec["extra"]
    assert extra["null.mode"] == "keep_zeros" and extra["null.q2_tensors"] == 6
    assert extra["null.trained_zero_share"] == extra["null.null_zero_share"] > 0.6
    assert "mode keep_zeros: zero share" in log and f"{extra['null.trained_zero_share']:.4f} trained" in log
    rec, log = _script_run(monkeypatch, tmp_path / "b", models["q2"], {})  # the default mode is no param
    assert rec["extra"]["null.mode"] == "uniform" and abs(rec["extra"]["null.null_zero_share"] - 1 / 3) < 0.02
    rec, log = _script_run(monkeypatch, tmp_path / "c", models["q1"], {})
    assert "extra" not in rec and "Q2_0" not in log  # a 1-bit null's record as it was


def test_rule_through_snakemake(models, tmp_path):
    """The rule run by Snakemake from a ternary config whose null mode is keep_zeros: the mode
    arrives as the rule's one param and the record holds the shares."""
    (tmp_path / "results/models").mkdir(parents=True)
    shutil.copyfile(models["q2"], tmp_path / "results/models/ternary-bonsai-1.7b.gguf")
    text = (REPO / "config/ternary-bonsai-1.7b.yaml").read_text()
    assert text.count("    mode: uniform\n") == 1
    (tmp_path / "c.yaml").write_text(text.replace("    mode: uniform\n", "    mode: keep_zeros\n"))
    target = "results/models/null/ternary-bonsai-1.7b-s42.gguf"
    res = subprocess.run([sys.executable, "-m", "snakemake", target, "--cores", "1", "--configfile", "c.yaml",
                          "--snakefile", str(REPO / "Snakefile"), "--allowed-rules", "randomize_null_model"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((tmp_path / (target + ".prov.json")).read_text())
    assert rec["params"] == {"mode": "keep_zeros"} and rec["extra"]["null.mode"] == "keep_zeros"
    assert rec["output"]["sha256"] == randomize_mlp(models["q2"], tmp_path / "x.gguf", 42, "keep_zeros").sha256
