"""The command line and the smoke workflow as a user drives them: real files, real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from neagari.cli import main
from neagari.engine.engine import Engine
from neagari.engine.gguf_io import GGUFFile
from neagari.hashing import sha256_file

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def test_score_table_matches_engine(fixture_models, tmp_path):
    model = fixture_models["untied_wide_heads"]
    out = tmp_path / "scores.tsv"
    assert main(["score", str(model), "--probes", str(REPO / "resources/probes/smoke.json"), "--out", str(out)]) == 0
    df = pl.read_csv(out, separator="\t")
    assert df.columns == ["name", "role", "n_prompt_tokens", "correct_id", "wrong_id", "correct_logit",
                          "wrong_logit", "gap", "top1_id", "correct_token", "wrong_token", "top1_token"]
    eng = Engine.load(model)
    doc = json.loads((REPO / "resources/probes/smoke.json").read_text())
    first = doc["probes"]["target"][0]
    logits = eng.logits([eng.tokenizer.encode(first["prompt"])])[0]
    c, w = eng.tokenizer.encode(first["correct"])[0], eng.tokenizer.encode(first["wrong"])[0]
    row = df.row(0, named=True)
    assert (row["correct_id"], row["wrong_id"]) == (c, w)
    assert abs(row["gap"] - float(logits[c] - logits[w])) < 1e-4
    assert row["top1_id"] == int(logits.argmax())
    # the tokens as text: the probe's own correct/wrong strings start with them
    assert first["correct"].startswith(row["correct_token"]) and first["wrong"].startswith(row["wrong_token"])
    assert row["top1_token"] == eng.tokenizer.decode([int(logits.argmax())])
    assert set(df["role"]) == {"target", "promoted_controls"}


def test_score_uses_calibrated_ids(fixture_models, tmp_path):
    probes = {"probes": {"target": [{"name": "p", "prompt": "The capital of France is", "correct": " Paris",
                                     "wrong": " Rome", "base_correct_id": 7, "base_wrong_id": 9}]}}
    (tmp_path / "p.json").write_text(json.dumps(probes))
    out = tmp_path / "s.parquet"
    assert main(["score", str(fixture_models["tied_gqa"]), "--probes", str(tmp_path / "p.json"), "--out", str(out)]) == 0
    assert pl.read_parquet(out).select("correct_id", "wrong_id").row(0) == (7, 9)


def test_apply_patch_cli_round_trip_and_refusals(fixture_models, tmp_path, capsys):
    base = fixture_models["tied_gqa"]
    sha = sha256_file(base)
    patch = {"format": "neagari-patch", "format_version": 1, "base_sha256": sha, "search_config": {},
             "flips": [{"layer": 1, "proj": "ffn_down.weight", "group": 3, "type": "group"},
                       {"layer": 0, "proj": "ffn_up.weight", "group": 10, "type": "scale", "bit": 7}]}
    p = tmp_path / "patch.json"
    p.write_text(json.dumps(patch))
    out = tmp_path / "patched.gguf"
    assert main(["apply-patch", "--base", str(base), "--out", str(out), str(p)]) == 0
    a, b = GGUFFile(base), GGUFFile(out)
    down_a, down_b = a.dequantize("blk.1.ffn_down.weight"), b.dequantize("blk.1.ffn_down.weight")
    # ffn_down of this shape is (128, 256): 2 groups per row, group 3 = row 1, columns 128..255
    assert np.array_equal(down_b[1, 128:], -down_a[1, 128:])
    assert np.array_equal(np.delete(down_b, 1, axis=0), np.delete(down_a, 1, axis=0))
    # undoing needs the patch to know the patched file's hash; then the base comes back exactly
    assert main(["apply-patch", "--base", str(out), "--out", str(tmp_path / "back.gguf"), "--force", str(p)]) == 2
    p.write_text(json.dumps(dict(patch, patched_sha256=sha256_file(out))))
    assert main(["apply-patch", "--base", str(out), "--out", str(tmp_path / "back.gguf"), str(p)]) == 0
    assert sha256_file(tmp_path / "back.gguf") == sha
    # refusals: wrong base, bad group, not a patch
    capsys.readouterr()
    other = fixture_models["mha_untied"]
    assert main(["apply-patch", "--base", str(other), "--out", str(tmp_path / "x.gguf"), str(p)]) == 2
    assert "sha256" in capsys.readouterr().err
    bad = dict(patch, flips=[{"layer": 0, "proj": "ffn_up.weight", "group": 10**9, "type": "group"}])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["apply-patch", "--base", str(base), "--out", str(tmp_path / "x.gguf"), str(tmp_path / "bad.json")]) == 2
    assert "out of range" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["apply-patch", "--base", str(base), "--out", str(tmp_path / "x.gguf"), str(tmp_path / "junk.json")]) == 2
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.slow
def test_smoke_workflow_with_provenance(smoke_run, tmp_path):
    """`snakemake` on the smoke config in a copy of the repository, then provenance verify (on a copy
    of the shared run, since the test then changes files)."""
    work = tmp_path / "wf"
    shutil.copytree(smoke_run, work, symlinks=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    table = pl.read_parquet(work / "results/scores/tiny-qat/smoke.parquet")
    smoke = json.loads((REPO / "resources/probes/smoke.json").read_text())["probes"]
    assert sorted(table["name"]) == sorted(p["name"] for group in smoke.values() for p in group)
    assert table["gap"].is_finite().all()
    assert (work / "results/figures/gaps/tiny-qat/smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((work / "results/scores/tiny-qat/smoke.parquet.prov.json").read_text())
    assert record["rule"] == "score_probes" and record["script"]["path"].endswith("scripts/score_probes.py")
    model_sha = sha256_file(work / "results/models/tiny-qat.gguf")
    assert {i["path"]: i["sha256"] for i in record["inputs"]}["results/models/tiny-qat.gguf"] == model_sha
    # the paper is built, with its figures embedded; every search's patch reverses to its base
    assert "data:image/png;base64," in (work / "results/paper/index.html").read_text()
    import gguf
    import hashlib

    import numpy as np

    from neagari.engine import q2
    from neagari.engine.gguf_io import GGUFFile

    def sha(path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    summaries = sorted((work / "results/search").glob("*/*/*/summary.json"))
    assert summaries, "the smoke workflow ran no search"
    known = {sha(m) for m in (work / "results/models").rglob("*.gguf")}  # base and null models
    assert sha(work / "results/models/tiny-qat.gguf") in known
    patched = {}
    for summary in summaries:
        s = json.loads(summary.read_text())
        patch = json.loads((summary.parent / "patch.json").read_text())
        assert s["iterations_run"] >= 1 or s["stop_reason"] == "all targets crossed", summary
        assert len(patch["flips"]) == s["accepted"] <= s["iterations_run"]
        assert (s["base_sha256"], s["patched_sha256"]) == (patch["base_sha256"], patch["patched_sha256"])
        assert s["accepted"] > 0 or s["base_sha256"] == s["patched_sha256"]
        model, stage, run = summary.parent.relative_to(work / "results/search").parts
        out = work / "results/patched" / model / stage / f"{run}.gguf"
        ternary = out.exists() and q2.GGML_TYPE in {r.ggml_type for r in GGUFFile(out).tensors.values()}
        if ternary:  # Q2_0 (gguf-py cannot read it): its moves undone, last first, give the base
            assert sha(out) == patch["patched_sha256"], out
            data = np.frombuffer(bytearray(out.read_bytes()), dtype=np.uint8).copy()
            tensors = GGUFFile(out).tensors
            for f in reversed(patch["flips"]):
                start = tensors[f"blk.{f['layer']}.{f['proj']}"].offset + q2.BLOCK_BYTES * f["group"]
                q2.apply_move(data[start:start + q2.BLOCK_BYTES], f["type"], f.get("bit"))
            assert hashlib.sha256(data.tobytes()).hexdigest() == patch["base_sha256"], out
            known.add(patch["patched_sha256"])
        elif out.exists():  # the assembled file: the recorded hash, and the moves XOR-ed back give the base
            assert sha(out) == patch["patched_sha256"], out
            data = bytearray(out.read_bytes())
            offsets = {t.name: int(t.data_offset) for t in gguf.GGUFReader(out).tensors}
            for f in patch["flips"]:
                start = offsets[f"blk.{f['layer']}.{f['proj']}"] + 18 * f["group"]
                for i in (range(start + 2, start + 18) if f.get("type", "group") == "group" else []):
                    data[i] ^= 0xFF
                if f.get("type") == "scale":
                    data[start + f["bit"] // 8] ^= 1 << (f["bit"] % 8)
            assert hashlib.sha256(data).hexdigest() == patch["base_sha256"], out
            patched[out] = patch
            known.add(patch["patched_sha256"])
    assert patched, "no search's patch was assembled into a GGUF"
    for summary in summaries:  # every search started from the base model or an assembled file
        assert json.loads(summary.read_text())["base_sha256"] in known, summary

    def verify():
        return subprocess.run([sys.executable, "-m", "neagari.cli", "provenance", "verify", "results"],
                              cwd=work, env=env, capture_output=True, text=True)

    assert verify().returncode == 0
    # a user edits a figure, drops a stray file, and swaps the probe set the scores came from
    fig = work / "results/figures/gaps/tiny-qat/smoke.pdf"
    fig.write_bytes(fig.read_bytes() + b"%")
    (work / "results/stray.txt").write_text("who made me?")
    probes = work / "resources/probes/smoke.json"
    probes.write_text(probes.read_text().replace("Paris", "Lyon"))
    res = verify()
    assert res.returncode == 1
    assert "smoke.pdf" in res.stdout and "stray.txt" in res.stdout and "smoke.json" in res.stdout, res.stdout


def test_search_arguments_default_to_the_search_config():
    from neagari.cli import build_parser
    from neagari.search.proposal import ProposalConfig
    from neagari.search.runner import SearchConfig, search_config

    a = build_parser().parse_args(["search", "m.gguf", "--probes", "p.json", "--out", "o", "--iterations", "5"])
    a.layers = [0, 1]  # the command fills in every layer of the model
    assert search_config(vars(a)) == SearchConfig(iterations=5, proposal=ProposalConfig(layers=(0, 1)))
    a = build_parser().parse_args(["search", "m.gguf", "--probes", "p.json", "--out", "o", "--iterations", "5",
                                   "--layers", "1", "--fitness", "focused", "--epsilon", "0.25", "--scale-prob", "0.5"])
    cfg = search_config(vars(a))
    assert (cfg.fitness, cfg.epsilon, cfg.proposal.layers, cfg.proposal.scale_prob) == ("focused", 0.25, (1,), 0.5)
