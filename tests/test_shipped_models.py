"""Shipped models (``source: shipped``, resources/models/): the checks before use, the post-hoc
Q1_0 rounding of a float file against llama.cpp's quantizer, the rules that ship and use them, and
the repository's shipped files against their pins."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from neagari.cli import main
from neagari.embedded.schemas import TrainingLoss
from neagari.engine import q1, q2
from neagari.engine.config import ModelConfig
from neagari.engine.export import write_model
from neagari.engine.fixtures import FixtureSpec, fixture_tokenizer_metadata, random_weights, write_fixture_model
from neagari.engine.gguf_io import TYPE_F16, TYPE_F32, GGUFFile
from neagari.engine.requantize import quantize_gguf
from neagari.hashing import sha256_file
from neagari.tables import write_table
from neagari.workflow import shipped
from neagari.workflow.shipped import ShippedModelError, verify_shipped

REPO = Path(__file__).resolve().parents[1]
KEY = ["models", "m", "shipped"]


def loss_table(model: str, variant: str) -> pl.DataFrame:
    return pl.DataFrame({"step": [1, 2, 3], "phase": ["copy", "mix", "mix"], "lr": [0.001, 0.002, 0.003],
                         "train_loss": [7.0, 6.5, 6.1], "eval_loss": [None, None, 6.3],
                         "elapsed_s": [0.1, 0.2, 0.3], "model": [model] * 3, "variant": [variant] * 3},
                        schema_overrides={"eval_loss": pl.Float64})


def ship_fixture(root: Path, name: str = "m", variant: str = "qat", seed: int = 0, with_float: bool = False) -> dict:
    """A shipped model as ``make model`` leaves it: GGUF + record directory (and, ``with_float``,
    the F16 file the GGUF rounds, as for an fp model); returns its config entry."""
    root.mkdir(parents=True, exist_ok=True)
    record = root / f"{name}.record"
    record.mkdir()
    write_table(loss_table(name, variant), record / shipped.LOSS, TrainingLoss)
    float_sha = None
    if with_float:
        src, _ = float_file(root, TYPE_F16)
        flt = src.rename(root / f"{name}.f16.gguf")
        gguf = quantize_gguf(flt, root / f"{name}.gguf")
        float_sha = sha256_file(flt)
    else:
        gguf = write_fixture_model(root / f"{name}.gguf", FixtureSpec(n_layer=1, seed=seed))
    files = {f"{name}.gguf": sha256_file(gguf), f"{name}.record/{shipped.LOSS}": sha256_file(record / shipped.LOSS)}
    if float_sha:
        files[f"{name}.f16.gguf"] = float_sha
    doc = shipped.make_record(model=name, variant=variant, embedded={"seed": 0, "train": {"steps": 3}}, files=files,
                              gguf_sha256=files[f"{name}.gguf"], float_sha256=float_sha, corpus_sha256="0" * 64,
                              tokenizer_sha256="1" * 64, trained={}, wall_time_s=1.0, git={}, shipped_at="now")
    (record / shipped.RECORD).write_text(json.dumps(doc))
    return {"source": "shipped", "variant": variant,
            "shipped": {"path": str(gguf), "sha256": files[f"{name}.gguf"], "record": str(record)}}


def refused(match: str, *args) -> str:
    with pytest.raises(ShippedModelError) as info:
        verify_shipped(*args)
    message = str(info.value)
    assert "\n" not in message and re.search(match, message), message
    return message


@pytest.fixture
def entry(tmp_path) -> dict:
    return ship_fixture(tmp_path / "models")


def args(entry: dict) -> tuple:
    s = entry["shipped"]
    return s["path"], s["sha256"], s["record"], KEY


# ---------------------------------------------------------------------------- verify_shipped


def test_the_pinned_file_and_its_record_are_accepted(entry):
    verify_shipped(*args(entry))
    verify_shipped(*args(entry)[:3], "models.m.shipped")  # a dotted key names the same place


def test_a_file_with_one_byte_changed_is_refused(entry):
    path = Path(entry["shipped"]["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    message = refused(r"sha256 [0-9a-f]{64} is not the pinned", *args(entry))
    assert message.startswith(f"{path}: ") and "(config models.m.shipped.sha256)" in message
    assert "git checkout" in message and "make model" in message


def test_a_record_of_another_file_is_refused(entry, tmp_path):
    other = ship_fixture(tmp_path / "other", seed=1)  # a record that describes another model file
    path, sha, _, key = args(entry)
    message = refused("describes sha256", path, sha, other["shipped"]["record"], key)
    assert other["shipped"]["sha256"] in message and "config models.m.shipped.sha256" in message


def test_a_changed_record_file_is_refused(entry):
    loss = Path(entry["shipped"]["record"]) / shipped.LOSS
    write_table(loss_table("m", "qat").with_columns(pl.col("train_loss") + 1), loss, TrainingLoss)
    refused(r"loss\.parquet: sha256 [0-9a-f]{64} is not the [0-9a-f]{64} that .*record\.json lists", *args(entry))


def test_missing_files_are_refused_in_one_line(entry):
    path, sha, record, key = args(entry)
    Path(path).unlink()
    refused(r"m\.gguf: no such file \(config models\.m\.shipped\.path\): restore it", path, sha, record, key)
    ship = ship_fixture(Path(path).parent.parent / "again")
    path, sha, record, key = args(ship)
    (Path(record) / shipped.RECORD).unlink()
    refused(r"record\.json: no such file \(config models\.m\.shipped\.record\)", path, sha, record, key)
    (Path(record) / shipped.RECORD).write_text("{not json")
    refused(r"record\.json: not a readable JSON record", path, sha, record, key)
    refused(r"m\.nowhere: no such directory", path, sha, Path(record).with_suffix(".nowhere"), key)


# ---------------------------------------------------------------------------- post-hoc Q1_0


def float_file(tmp_path: Path, float_type: int) -> tuple[Path, dict]:
    tok = fixture_tokenizer_metadata(512)
    cfg = ModelConfig(n_layer=2, hidden=128, ffn=384, n_head=4, n_kv_head=2, head_dim=32,
                      vocab_size=len(tok["tokenizer.ggml.tokens"]), tied_embeddings=False)
    weights = random_weights(cfg, seed=13)
    weights["blk.0.ffn_up.weight"][3, :128] = 0.0  # an all-zero block: d = 0, every bit set
    weights["blk.1.attn_q.weight"][0, :4] = [-1e-9, 1e-9, -0.0, 0.0]  # F16: below the smallest subnormal
    path = write_model(tmp_path / f"float{float_type}.gguf", cfg, weights, tok, name="fp-test", quantize=False,
                       float_type=float_type, extra_metadata={"neagari.training.variant": "fp"})
    return path, weights


def llama_quantize(src: Path, dst: Path, fmt=q1) -> None:
    """llama.cpp's quantize tool to ``fmt`` (q1 or q2), as tests/test_q2.py runs it."""
    from test_q2 import llama_quantize as quantize

    quantize(src, dst, fmt.GGML_TYPE, fmt.LLAMA_FTYPE)


def assert_rounded_as_llama_cpp(*args, **kw) -> None:
    from test_q2 import assert_rounded_as_llama_cpp as check

    check(*args, **kw)


@pytest.mark.llama
@pytest.mark.parametrize("float_type", [TYPE_F32, TYPE_F16], ids=["F32", "F16"])
def test_posthoc_q1_equals_llama_cpp_quantize(tmp_path, float_type):
    src, _ = float_file(tmp_path, float_type)
    ours, ref = tmp_path / "ours.gguf", tmp_path / "llama.gguf"
    quantize_gguf(src, ours)
    llama_quantize(src, ref)
    assert_rounded_as_llama_cpp(ours, ref, src, q1.GGML_TYPE_Q1_0, q1.LLAMA_FTYPE_MOSTLY_Q1_0, n_rounded=2 + 7 * 2)
    a, f = GGUFFile(ours), GGUFFile(src)
    assert all(f.tensors[n].ggml_type == float_type for n, r in a.tensors.items() if r.ggml_type == q1.GGML_TYPE_Q1_0)
    assert a.metadata["neagari.training.variant"] == "fp" and f.metadata["general.file_type"] != 40


def test_posthoc_q1_of_f32_equals_the_direct_export(tmp_path):
    """Rounding an F32 file gives the file write_model exports from the same weights, byte for byte."""
    src, weights = float_file(tmp_path, TYPE_F32)
    out = quantize_gguf(src, tmp_path / "q1.gguf")
    direct = write_model(tmp_path / "direct.gguf", ModelConfig.from_gguf(GGUFFile(src)), weights,
                         fixture_tokenizer_metadata(512), name="fp-test", extra_metadata={"neagari.training.variant": "fp"})
    assert sha256_file(out) == sha256_file(direct)


def test_quantize_command_refuses_what_it_cannot_round(tmp_path, capsys):
    src, _ = float_file(tmp_path, TYPE_F16)
    q = tmp_path / "q1.gguf"
    assert main(["quantize", str(src), "--out", str(q)]) == 0
    assert GGUFFile(q).sha256() == sha256_file(quantize_gguf(src, tmp_path / "again.gguf"))
    capsys.readouterr()
    (tmp_path / "link.gguf").symlink_to(src)
    (tmp_path / "dir").mkdir()
    (tmp_path / "text.gguf").write_text("not a model")
    before = sha256_file(src)
    for argv, message in [
        (["quantize", str(src), "--out", str(src)], "is the input file"),
        (["quantize", str(src), "--out", str(tmp_path / "link.gguf")], "is the input file"),
        (["quantize", str(src), "--out", str(tmp_path / "dir")], "is a directory"),
        (["quantize", str(q), "--out", str(tmp_path / "x.gguf")], "is Q1_0, not float"),
        (["quantize", str(tmp_path / "text.gguf"), "--out", str(tmp_path / "y.gguf")], "not a GGUF file"),
        (["quantize", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "z.gguf")], "no such file"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and err.startswith("neagari: error: "), err
    assert sha256_file(src) == before
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "y.gguf").exists()


def test_a_float_file_refuses_q1_blocks(tmp_path):
    tok = fixture_tokenizer_metadata(512)
    cfg = ModelConfig(n_layer=1, hidden=128, ffn=256, n_head=2, n_kv_head=1, head_dim=64,
                      vocab_size=len(tok["tokenizer.ggml.tokens"]))
    weights = random_weights(cfg, seed=0)
    weights["blk.0.ffn_up.weight"] = q1.quantize(weights["blk.0.ffn_up.weight"])
    with pytest.raises(ValueError, match="cannot hold Q1_0 blocks"):
        write_model(tmp_path / "f.gguf", cfg, weights, tok, quantize=False, float_type=TYPE_F16)
    assert not (tmp_path / "f.gguf").exists()


# ---------------------------------------------------------------------------- the rules


def snakemake(workdir: Path, *args, timeout=300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args, "--cores", "1", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(workdir / "config.yaml")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)


def job_stats(stdout: str) -> dict[str, int]:
    stats = stdout[stdout.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def workflow_config(models: dict) -> dict:
    return {"run_name": "shipped-test", "seed": 0, "device": "cpu", "models": models,
            "probe_sets": {"verbatim": "results/data/probes/verbatim.json"},
            "embedded": {"corpus": {"n_train": 10, "n_heldout": 5}, "n_eval_items": 4}}


TRAINING_RULES = {"train_tokenizer", "train_embedded_model", "train_embedded_float", "quantize_posthoc"}


def test_a_shipped_config_uses_the_files_and_trains_nothing(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    models = {"m-qat": ship_fixture(tmp_path / "models", "m-qat", "qat"),
              "m-fp": ship_fixture(tmp_path / "models", "m-fp", "fp", seed=1)}
    (work / "config.yaml").write_text(yaml.safe_dump(workflow_config(models)))
    res = snakemake(work, "-n")
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = job_stats(res.stdout)
    assert jobs["use_shipped_model"] == 2 and not TRAINING_RULES & set(jobs), jobs
    assert jobs["quality_report"] == 1 and jobs["plot_training_loss"] == 2

    # the rule itself: checked copies with provenance; a tampered file stops it with the one line
    outs = ["results/models/m-qat.gguf", "results/training/m-qat.loss.parquet"]
    res = snakemake(work, *outs)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sha256_file(work / outs[0]) == models["m-qat"]["shipped"]["sha256"]
    record = json.loads((work / (outs[0] + ".prov.json")).read_text())
    assert record["rule"] == "use_shipped_model" and record["output"]["sha256"] == models["m-qat"]["shipped"]["sha256"]
    gguf = Path(models["m-fp"]["shipped"]["path"])
    data = bytearray(gguf.read_bytes())
    data[-1] ^= 0x80
    gguf.write_bytes(bytes(data))
    res = snakemake(work, "results/models/m-fp.gguf")
    assert res.returncode != 0
    log = (work / "logs/models/m-fp.shipped.log").read_text()
    assert f"ShippedModelError: {gguf}: sha256" in log and "(config models.m-fp.shipped.sha256)" in log
    assert not (work / "results/models/m-fp.gguf").exists()


def test_a_shipped_config_without_its_pins_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(workflow_config({"m": {"source": "shipped",
                                                                               "variant": "qat"}})))
    res = snakemake(tmp_path, "-n")
    assert res.returncode != 0 and "models.m: missing required key 'shipped'" in res.stderr + res.stdout
    entry = ship_fixture(tmp_path / "models")
    entry["shipped"]["sha256"] = entry["shipped"]["sha256"].upper()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(workflow_config({"m": entry})))
    res = snakemake(tmp_path, "-n")
    assert res.returncode != 0 and "models.m.shipped.sha256:" in res.stderr + res.stdout


@pytest.mark.llama
def test_a_posthoc_member_rounds_the_shipped_float_file(tmp_path):
    """source posthoc: the shipped fp model's float file, checked against its record, rounded to Q2_0;
    the same bytes as llama.cpp's quantizer on that file. A changed float file stops the rule in one
    line; a posthoc model of a model without a float file is refused before any job."""
    work = tmp_path / "work"
    work.mkdir()
    models = {"m-fp": ship_fixture(tmp_path / "models", "m-fp", "fp", with_float=True),
              "m-q2": {"source": "posthoc", "posthoc": {"from": "m-fp", "format": "Q2_0"}}}
    (work / "config.yaml").write_text(yaml.safe_dump(workflow_config(models)))
    res = snakemake(work, "results/models/m-q2.gguf", "results/training/m-q2.loss.parquet")
    assert res.returncode == 0, res.stderr[-3000:]
    flt = tmp_path / "models/m-fp.f16.gguf"
    ref = tmp_path / "llama.gguf"
    llama_quantize(flt, ref, q2)
    ours, theirs = GGUFFile(work / "results/models/m-q2.gguf"), GGUFFile(ref)
    assert {r.ggml_type for n, r in ours.tensors.items() if not n.endswith("_norm.weight")} == {q2.GGML_TYPE}
    for name in theirs.tensors:
        assert np.array_equal(ours.raw(name), theirs.raw(name)), name
    history = pl.read_parquet(work / "results/training/m-q2.loss.parquet")
    assert history["model"].unique().to_list() == ["m-q2"] and history["variant"].unique().to_list() == ["fp"]
    data = bytearray(flt.read_bytes())
    data[-1] ^= 0x01
    flt.write_bytes(bytes(data))
    for f in ("results/models/m-fp.f16.gguf", "results/models/m-q2.gguf"):
        (work / f).unlink()
    res = snakemake(work, "results/models/m-q2.gguf")
    assert res.returncode != 0
    log = (work / "logs/models/m-fp.shipped-float.log").read_text()
    assert f"ShippedModelError: {flt}: sha256" in log and "record.json names" in log
    models["m-q2"]["posthoc"]["from"] = "m-qat"
    models["m-qat"] = ship_fixture(tmp_path / "models", "m-qat", "qat")
    (work / "config.yaml").write_text(yaml.safe_dump(workflow_config(models)))
    res = snakemake(work, "-n")
    assert res.returncode != 0
    assert "config: models.m-q2.posthoc.from: 'm-qat' has no float file" in res.stderr + res.stdout


def test_ship_then_use(tmp_path):
    """ship_model on the files training leaves, the entries `make model` prints, then a run on them."""
    work = tmp_path / "work"
    models = {"q": {"source": "embedded", "variant": "qat"}, "f": {"source": "embedded", "variant": "fp"}}
    config = workflow_config(models)
    config["embedded"]["train"] = {"steps": 3, "batch_size": 2, "seq_len": 16}
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    write_fixture_model(work / "results/models/q.gguf", FixtureSpec(n_layer=1))  # what the training chain leaves
    f16, _ = float_file(tmp_path, TYPE_F16)
    (work / "results/models").mkdir(parents=True, exist_ok=True)
    f16.rename(work / "results/models/f.f16.gguf")
    quantize_gguf(work / "results/models/f.f16.gguf", work / "results/models/f.gguf")
    for name, variant in (("q", "qat"), ("f", "fp")):
        for rel in (f"results/figures/training/{name}.loss.png", f"results/quality/{name}/llama_crosscheck.parquet",
                    f"logs/models/{name}.train.log"):
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_text(f"{rel}\n")
        write_table(loss_table(name, variant), work / f"results/training/{name}.loss.parquet", TrainingLoss)
    for rel in ("results/data/corpus.train.jsonl", "results/models/embedded/tokenizer.json"):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text("{}\n")
    res = snakemake(work, "ship", "--allowed-rules", "ship", "ship_model", "ship_float_model")
    assert res.returncode == 0, res.stderr[-3000:]
    out = work / "resources/models"
    rec = json.loads((out / "f.record/record.json").read_text())
    assert rec["model"] == "f" and rec["variant"] == "fp" and rec["tokens_seen"] == 3 * 2 * 16
    assert rec["sha256"] == sha256_file(out / "f.gguf") and rec["float_sha256"] == sha256_file(out / "f.f16.gguf")
    # the training steps' wall time is the loss log's last elapsed_s (it survives a resume)
    assert rec["training"]["wall_time_s"] == 0.3 and rec["corpus_sha256"] == sha256_file(
        work / "results/data/corpus.train.jsonl")
    assert set(rec["files"]) == {"f.gguf", "f.f16.gguf", *(f"f.record/{n}" for n in shipped.RECORD_FILES[1:])}
    assert not (out / "q.f16.gguf").exists()

    printed = subprocess.run([sys.executable, "-m", "neagari.workflow.shipped", "config.yaml"], cwd=work,
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    entries = yaml.safe_load(printed.stdout)["models"]
    sums = shipped.parse_sha256sums((out / shipped.SUMS).read_text())
    assert set(sums) == {*rec["files"], "f.record/record.json", "q.gguf", "q.record/record.json",
                         *(f"q.record/{n}" for n in shipped.RECORD_FILES[1:])}
    check = subprocess.run(["sha256sum", "-c", "--quiet", shipped.SUMS], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert entries["f"] == {"source": "shipped", "variant": "fp", "shipped": {
        "path": "resources/models/f.gguf", "sha256": rec["sha256"], "record": "resources/models/f.record"}}

    use = tmp_path / "use"
    use.mkdir()
    for e in entries.values():  # the entries name the files relative to the repository: here, to work
        e["shipped"]["path"] = str(work / e["shipped"]["path"])
        e["shipped"]["record"] = str(work / e["shipped"]["record"])
    (use / "config.yaml").write_text(yaml.safe_dump(workflow_config(entries)))
    res = snakemake(use, "results/models/f.gguf", "results/training/q.loss.parquet")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sha256_file(use / "results/models/f.gguf") == sha256_file(work / "results/models/f.gguf")


# ---------------------------------------------------------------------------- the repository's files


def test_the_repository_shipped_models_match_their_pins():
    """Every `source: shipped` model of config/config.yaml: its file exists, matches the pin and
    its record, and is listed with that hash in resources/models/SHA256SUMS (when there is one)."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    sums_path = REPO / "resources/models" / shipped.SUMS
    sums = shipped.parse_sha256sums(sums_path.read_text()) if sums_path.exists() else None
    for name, spec in config["models"].items():
        if spec["source"] != "shipped":
            continue
        s = spec["shipped"]
        path, record = REPO / s["path"], REPO / s["record"]
        assert path.is_file(), f"{s['path']} (models.{name}.shipped.path) is not in the repository"
        verify_shipped(path, s["sha256"], record, ["models", name, "shipped"])
        if sums is not None:
            rel = path.relative_to(sums_path.parent).as_posix()
            assert sums.get(rel) == s["sha256"], f"{rel}: not listed in {sums_path.name} with its pinned sha256"
    for rel, sha in (sums or {}).items():
        assert sha256_file(sums_path.parent / rel) == sha, f"resources/models/{rel}: not the sha256 {sums_path.name} lists"


def test_the_recipe_config_is_valid_and_makes_the_default_runs_data():
    """config/model.yaml trains what config/config.yaml uses: the data the default run builds (corpus,
    probe and evaluation sets) must be the recipe's, and every recipe model is in the default run."""
    import jsonschema

    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    recipe = yaml.safe_load((REPO / "config/model.yaml").read_text())
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(recipe)
    for key in ("seed", "corpus", "n_eval_items"):
        assert recipe["embedded"].get(key) == default["embedded"].get(key), f"embedded.{key}"
    for name, spec in recipe["models"].items():
        assert spec["source"] == "embedded"
        assert default["models"][name]["variant"] == spec["variant"]
        assert default["models"][name]["source"] in ("embedded", "shipped")


def test_the_recipe_regenerates_the_shipped_training_corpus():
    """The corpus generator still writes, byte for byte, the corpus the shipped models were trained
    on (their records' corpus_sha256), so `make model` retrains on the same data; probe-only
    content such as coding's held-out shapes must stay out of it."""
    import hashlib

    from neagari.embedded import toydata
    from neagari.workflow import wordnet as nwn

    if nwn.verify(checksums=False):
        try:
            nwn.install_wordnet()
        except RuntimeError as e:
            pytest.skip(f"WordNet 3.0 not installed and could not be installed ({e})")
    recipe_config = yaml.safe_load((REPO / "config/model.yaml").read_text())
    recipe = recipe_config["embedded"]
    corpus = recipe["corpus"]
    text = toydata.corpus_jsonl(toydata.build_corpus(recipe["seed"], corpus["n_train"], "train",
                                                     n_wordnet=corpus["n_wordnet"]))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    for name in recipe_config["models"]:
        record = json.loads((REPO / "resources/models" / f"{name}.record" / shipped.RECORD).read_text())
        assert record["corpus_sha256"] == digest, name
