"""Provenance records on real files: writing, verifying, and the Snakemake context manager."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from neagari.workflow.provenance import (RECORD_SUFFIX, Problem, ProvenanceError, RuleProvenance, environment, git_state,
                                plain, sha256_path, verify, write_records)


def _record(outputs, inputs, **kw):
    args = dict(rule="make", inputs=inputs, params={"n": 3}, wildcards={"domain": "math"},
                config={"seed": 1}, script=__file__, started_at="2026-01-01T00:00:00+00:00")
    return write_records(outputs, **{**args, **kw})


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """work/inputs/in.txt → work/results/{out.txt, table/ (a directory output), big.bin}."""
    work = tmp_path / "work"
    (work / "inputs").mkdir(parents=True)
    (work / "results" / "table" / "sub").mkdir(parents=True)
    monkeypatch.chdir(work)
    Path("inputs/in.txt").write_text("input v1\n")
    Path("results/out.txt").write_text("output\n")
    Path("results/table/a.csv").write_text("x,y\n1,2\n")
    Path("results/table/sub/b.csv").write_text("z\n3\n")
    Path("results/big.bin").write_bytes(bytes(range(256)) * 8)
    _record(["results/out.txt", "results/table/", "results/big.bin"], {"src": ["inputs/in.txt"]})
    return work


def test_clean_tree_and_record_contents(tree):
    assert verify("results") == []
    rec = json.loads(Path("results/out.txt" + RECORD_SUFFIX).read_text())
    assert rec["record_version"] == 1 and rec["rule"] == "make" and rec["wildcards"] == {"domain": "math"}
    assert rec["inputs"] == [{"name": "src", "path": "inputs/in.txt", "sha256": sha256_path("inputs/in.txt"),
                              "size": 9, "mtime_ns": os.stat("inputs/in.txt").st_mtime_ns}]
    assert rec["output"]["path"] == "results/out.txt" and rec["output"]["sha256"] == sha256_path("results/out.txt")
    assert rec["script"]["sha256"] == sha256_path(__file__)
    assert set(rec["git"]) == {"commit", "dirty"} and rec["environment"]["packages"]["numpy"] == np.__version__
    table = json.loads(Path("results/table" + RECORD_SUFFIX).read_text())
    assert sorted(table["output"]["files"]) == ["a.csv", "sub/b.csv"]
    assert table["output"]["sha256"] == sha256_path("results/table")


def test_modified_output(tree):
    data = bytearray(Path("results/out.txt").read_bytes())
    data[0] ^= 1
    Path("results/out.txt").write_bytes(bytes(data))
    assert [(p.path, p.kind) for p in verify("results")] == [(str(Path("results/out.txt")), "modified")]


def test_stale_and_missing_input(tree):
    Path("inputs/in.txt").write_text("input v2\n")
    problems = verify("results")
    assert {p.kind for p in problems} == {"stale-input"} and len(problems) == 3
    assert all("inputs/in.txt" in p.detail for p in problems)
    Path("inputs/in.txt").unlink()
    problems = verify("results")
    assert {(p.kind, p.severity) for p in problems} == {("input-missing", "warning")}


def test_stray_file_and_ignored_names(tree):
    Path("results/stray.txt").write_text("?")
    Path("results/half.gguf.part").write_text("")
    Path("results/x.json.123.tmp").write_text("")
    (tree / "results" / ".snakemake").mkdir()
    Path("results/.snakemake/log.txt").write_text("")
    Path("results/table/.snakemake_timestamp").write_text("")  # Snakemake adds this after the job
    assert [(p.path, p.kind) for p in verify("results")] == [(str(Path("results/stray.txt")), "no-record")]


def test_directory_output_changes(tree):
    Path("results/table/sub/b.csv").write_text("z\n4\n")
    Path("results/table/new.csv").write_text("")
    (problem,) = verify("results")
    assert problem.kind == "modified" and problem.path == str(Path("results/table"))
    assert "new.csv" in problem.detail and "sub/b.csv" in problem.detail


def test_missing_output_and_bad_record(tree):
    Path("results/out.txt").unlink()
    Path("results/junk" + RECORD_SUFFIX).write_text("{not json")
    Path("results/junk").write_text("")
    kinds = {(p.path, p.kind) for p in verify("results")}
    assert kinds == {(str(Path("results/out.txt")), "missing"),
                     (str(Path("results/junk" + RECORD_SUFFIX)), "bad-record")}


def test_large_file_size_mtime_shortcut(tree):
    big = Path("results/big.bin")
    st = big.stat()
    data = bytearray(big.read_bytes())
    data[100] ^= 0xFF  # same size ...
    big.write_bytes(bytes(data))
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and same mtime
    assert verify("results", large_bytes=1024) == []  # trusted without re-hashing
    assert [p.kind for p in verify("results", large_bytes=1024, deep=True)] == ["modified"]
    assert [p.kind for p in verify("results")] == ["modified"]  # small files are always hashed
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: the shortcut no longer applies
    assert [p.kind for p in verify("results", large_bytes=1024)] == ["modified"]


def test_moved_tree_still_verifies(tree, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tree, moved)
    monkeypatch.chdir(tmp_path)  # neither the old nor the new working directory
    assert verify(moved / "results") == []
    (moved / "inputs" / "in.txt").write_text("changed\n")
    assert {p.kind for p in verify(moved / "results")} == {"stale-input"}


def test_write_refuses_missing_output(tree):
    with pytest.raises(ProvenanceError, match="outputs missing.*results/nothing.txt"):
        _record(["results/out.txt", "results/nothing.txt"], ["inputs/in.txt"])


def test_verify_refuses_missing_root(tmp_path):
    with pytest.raises(ProvenanceError, match="not a directory"):
        verify(tmp_path / "absent")


def test_sha256_path_directory(tmp_path):
    d = tmp_path / "d"
    (d / "s").mkdir(parents=True)
    (d / "s" / "f").write_text("1")
    first = sha256_path(d)
    (d / "s" / "f").rename(d / "s" / "g")  # same bytes, another name: another hash
    assert sha256_path(d) != first
    assert sha256_path(d / "s" / "g") == sha256_path(d / "s" / "g")


def test_plain_serialises_snakemake_and_numpy():
    from snakemake.iocontainers import InputFiles, Params, Wildcards

    params = Params(fromdict={"lam": np.float32(1.5), "layers": np.array([1, 2]), "out": Path("a/b")})
    assert plain(params) == {"lam": 1.5, "layers": [1, 2], "out": "a/b"}
    assert plain(Wildcards(fromdict={"domain": "math"})) == {"domain": "math"}
    assert plain(InputFiles(["x", "y"])) == ["x", "y"]
    assert plain({1: {np.int64(2)}, "t": (None, True)}) == {"1": [2], "t": [None, True]}
    assert isinstance(plain(object()), str)
    json.dumps(plain(params))


def test_snakemake_namedlist_inputs_keep_names(tree):
    from snakemake.iocontainers import InputFiles

    Path("inputs/other.txt").write_text("2")
    inputs = InputFiles(["inputs/in.txt", "inputs/other.txt"])
    inputs._set_name("model", 0)
    (rec_path,) = _record(["results/out.txt"], inputs)
    entries = json.loads(rec_path.read_text())["inputs"]
    assert [(e.get("name"), e["path"]) for e in entries] == [("model", "inputs/in.txt"), (None, "inputs/other.txt")]


def test_git_state(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    (tmp_path / "f").write_text("1")
    assert git_state(tmp_path) == {"commit": None, "dirty": True}  # no commit yet
    subprocess.run(git + ["add", "f"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "x"], check=True)
    state = git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False


def test_environment():
    env = environment()
    assert env["python"] and env["packages"]["numpy"] == np.__version__
    assert set(env["packages"]) >= {"torch", "numpy", "gguf", "tokenizers", "snakemake", "polars", "pandera"}
    assert "cuda_available" in env["device"]


def _fake_snakemake(out: Path) -> SimpleNamespace:
    return SimpleNamespace(input=["inputs/in.txt"], output=[str(out)], params={"n": 1},
                           wildcards={"domain": "code"}, rule="fake_rule", log=[],
                           config={"score": {"lam": 1.0}, "other": 2})


def test_rule_provenance_records_only_on_success(tree):
    out = Path("results/fake.txt")
    smk = _fake_snakemake(out)
    with pytest.raises(RuntimeError):
        with RuleProvenance(smk, config_keys=["score"], seed=5):
            out.write_text("partial")
            raise RuntimeError("rule failed")
    assert not Path(str(out) + RECORD_SUFFIX).exists()

    with RuleProvenance(smk, config_keys=["score", "absent"], seed=5) as prov:
        assert not Path(str(out) + RECORD_SUFFIX).exists()
        out.write_text("done")
        prov.device = "cpu"
        prov.extra["iterations"] = np.int64(10)
    assert prov.records == [Path(str(out) + RECORD_SUFFIX)]
    rec = json.loads(prov.records[0].read_text())
    assert rec["rule"] == "fake_rule" and rec["seed"] == 5 and rec["device"] == "cpu"
    assert rec["config"] == {"score": {"lam": 1.0}, "absent": None}
    assert rec["extra"] == {"iterations": 10}
    assert rec["script"]["path"].endswith("tests/test_provenance.py")  # the caller's __file__
    assert rec["started_at"] <= rec["finished_at"]
    assert verify("results") == []


def test_problem_str():
    p = Problem("a/b", "modified", "x")
    assert str(p) == "modified: a/b: x" and p.severity == "error"


def test_rule_provenance_finds_snakemake_script_through_wrappers(tree):
    """Snakemake runs a copy of the script whose preamble sets ``__real_file__`` and points
    ``__file__`` at the real script; a wrapping context manager must not be taken for it."""
    import contextlib

    script = Path("scripts/real.py")
    script.parent.mkdir()
    script.write_text("# the rule's script\n")

    @contextlib.contextmanager
    def wrapper(smk):  # like neagari.workflow.smk.rule_context: RuleProvenance created one level down
        with RuleProvenance(smk) as prov:
            yield prov

    smk = _fake_snakemake(Path("results/wrapped.txt"))
    ns = {"__name__": "__main__", "__real_file__": ".snakemake/scripts/tmpcopy.py",
          "__file__": str(script.resolve()), "smk": smk, "wrapper": wrapper}
    exec(compile("with wrapper(smk) as prov:\n    open(smk.output[0], 'w').write('x')\n",
                 ".snakemake/scripts/tmpcopy.py", "exec"), ns)
    rec = json.loads(ns["prov"].records[0].read_text())
    assert rec["script"] == {"path": "scripts/real.py", "sha256": sha256_path(script)}
