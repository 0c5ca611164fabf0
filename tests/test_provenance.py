"""Provenance records on real files: writing, verifying, and the Snakemake context manager."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from neagari.workflow.provenance import (RECORD_SUFFIX, Problem, ProvenanceError, RuleProvenance, environment, git_state,
                                plain, sha256_path, verify, write_records)


REPO = Path(__file__).resolve().parents[1]


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
    import hashlib

    d = tmp_path / "d"
    (d / "s").mkdir(parents=True)
    (d / "s" / "f").write_text("1")
    (d / "a.txt").write_bytes(b"xyz")
    one, xyz = hashlib.sha256(b"1").hexdigest(), hashlib.sha256(b"xyz").hexdigest()

    def listing(pairs):  # the documented digest: sha256 over sorted "relative path NUL sha" lines
        return hashlib.sha256("".join(f"{rel}\0{sha}\n" for rel, sha in sorted(pairs)).encode()).hexdigest()

    assert sha256_path(d / "s" / "f") == one  # a file: the sha256 of its bytes
    assert sha256_path(d) == listing([("s/f", one), ("a.txt", xyz)])
    first = sha256_path(d)
    (d / "s" / "f").rename(d / "s" / "g")  # same bytes, another name: another hash
    assert sha256_path(d) != first
    assert sha256_path(d) == listing([("s/g", one), ("a.txt", xyz)])
    assert sha256_path(d / "s" / "g") == one


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


# ---------------------------------------------------------------------------- hostile trees and records


def _cli_verify(root) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "neagari.cli", "provenance", "verify", str(root)],
                          capture_output=True, text=True, env=env, timeout=300)


def _assert_cli_reports(root, problems):
    """The command exits 1 without a traceback and prints exactly one line per problem, naming its file."""
    r = _cli_verify(root)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = r.stdout.splitlines()
    assert len(lines) == len(problems), r.stdout
    for line, p in zip(lines, problems):
        assert line.split()[:2] == [p.kind, p.path] and line.rstrip().endswith(p.detail)


def _replace(path: Path, how: str):
    data = path.read_bytes()
    path.unlink()
    if how == "empty-dir":
        path.mkdir()
    elif how == "dir-with-file":
        path.mkdir()
        (path / "inner.txt").write_bytes(data)
    elif how == "symlink-to-copy":
        copy = path.with_name(path.name + ".copy")
        copy.write_bytes(data)
        _record([copy], [])  # the copy itself is in order: only the link is a problem
        path.symlink_to(copy.name)
    else:
        raise AssertionError(how)


KIND_CASES = {"empty-dir": "a directory", "dir-with-file": "a directory", "symlink-to-copy": "a symlink"}


@pytest.mark.parametrize("how", sorted(KIND_CASES))
def test_output_file_replaced_by_another_kind(tree, how):
    _replace(Path("results/out.txt"), how)
    assert [(p.path, p.kind, p.detail) for p in verify("results")] == [
        (str(Path("results/out.txt")), "kind-changed", f"recorded a file, found {KIND_CASES[how]}")]


def test_empty_output_file_replaced_by_empty_dir(tree):
    """An empty file and an empty directory have the same digest; only the kind tells them apart."""
    Path("results/empty.txt").write_text("")
    _record(["results/empty.txt"], [])
    Path("results/nothing").mkdir()
    assert sha256_path("results/empty.txt") == sha256_path("results/nothing")
    Path("results/nothing").rmdir()
    _replace(Path("results/empty.txt"), "empty-dir")
    assert [(p.path, p.kind) for p in verify("results")] == [(str(Path("results/empty.txt")), "kind-changed")]


def test_directory_output_replaced_by_a_file_or_link(tree):
    shutil.rmtree("results/table")
    Path("results/table").write_text("x,y\n1,2\n")
    assert [(p.kind, p.detail) for p in verify("results")] == [("kind-changed", "recorded a directory, found a file")]
    Path("results/table").unlink()
    Path("results/table").symlink_to("nowhere")
    assert [(p.kind, p.detail) for p in verify("results")] == [
        ("kind-changed", "recorded a directory, found a symlink (dangling)")]


def test_kind_changes_on_the_command_line(tree):
    for name, how in [("out.txt", "empty-dir"), ("big.bin", "dir-with-file")]:
        _replace(Path("results", name), how)
    shutil.rmtree("results/table")
    Path("results/table").write_text("")
    problems = verify("results")
    assert [(p.path, p.kind) for p in problems] == [(str(Path("results", n)), "kind-changed")
                                                    for n in ("big.bin", "out.txt", "table")]
    _assert_cli_reports("results", problems)


def test_symlink_outputs_record_their_kind(tree):
    Path("results/target.txt").write_text("t\n")
    Path("results/link.txt").symlink_to("target.txt")
    _record(["results/target.txt", "results/link.txt"], [])
    assert json.loads(Path("results/link.txt" + RECORD_SUFFIX).read_text())["output"]["kind"] == "symlink"
    assert json.loads(Path("results/out.txt" + RECORD_SUFFIX).read_text())["output"]["kind"] == "file"
    assert json.loads(Path("results/table" + RECORD_SUFFIX).read_text())["output"]["kind"] == "directory"
    assert verify("results") == []
    Path("results/link.txt").unlink()
    Path("results/link.txt").write_text("t\n")  # identical bytes, but no longer a link
    assert [(p.kind, p.detail) for p in verify("results")] == [("kind-changed", "recorded a symlink, found a file")]


def test_records_without_kind_still_verify(tree):
    """Records written before ``kind`` existed: a directory is told by its per-file sha256s."""
    for rec_path in Path("results").glob("*" + RECORD_SUFFIX):
        rec = json.loads(rec_path.read_text())
        del rec["output"]["kind"]
        rec_path.write_text(json.dumps(rec))
    assert verify("results") == []
    _replace(Path("results/out.txt"), "empty-dir")
    shutil.rmtree("results/table")
    Path("results/table").write_text("")
    assert [(p.kind, p.detail) for p in verify("results")] == [
        ("kind-changed", "recorded a file, found a directory"), ("kind-changed", "recorded a directory, found a file")]


def _edit(rec: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = rec
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return rec


_DELETE = object()
# record file name -> (how its text is spoiled, a fragment of the expected detail)
BAD_RECORDS = {
    "output-str": (lambda r: _edit(r, "output", "results/out.txt"), "output: Input should be a valid dictionary"),
    "output-missing": (lambda r: _edit(r, "output", _DELETE), "output: Field required"),
    "inputs-str": (lambda r: _edit(r, "inputs", "inputs/in.txt"), "inputs: Input should be a valid list"),
    "inputs-mapping": (lambda r: _edit(r, "inputs", {"src": "inputs/in.txt"}), "inputs: Input should be a valid list"),
    "inputs-missing": (lambda r: _edit(r, "inputs", _DELETE), "inputs: Field required"),
    "input-entry-str": (lambda r: _edit(r, "inputs", ["inputs/in.txt"]), "inputs.0: Input should be a valid dict"),
    "input-sha-number": (lambda r: _edit(r, "inputs.0.sha256", 12345), "inputs.0.sha256: Input should be a valid str"),
    "input-path-missing": (lambda r: _edit(r, "inputs.0.path", _DELETE), "inputs.0.path: Field required"),
    "output-sha-number": (lambda r: _edit(r, "output.sha256", 5), "output.sha256: Input should be a valid string"),
    "output-sha-short": (lambda r: _edit(r, "output.sha256", "abc"), "output.sha256: String should match pattern"),
    "output-size-str": (lambda r: _edit(r, "output.size", "8"), "output.size: Input should be a valid integer"),
    "output-size-bool": (lambda r: _edit(r, "output.size", True), "output.size: Input should be a valid integer"),
    "output-path-number": (lambda r: _edit(r, "output.path", 7), "output.path: Input should be a valid string"),
    "output-kind-unknown": (lambda r: _edit(r, "output.kind", "fifo"), "output.kind: Input should be 'file'"),
    "dir-files-list": (lambda r: _edit(r, "output.files", ["a.csv"]), "output.files: Input should be a valid dict"),
    "rule-missing": (lambda r: _edit(r, "rule", _DELETE), "rule: Field required"),
    "version-str": (lambda r: _edit(r, "record_version", "1"), "record_version: Input should be a valid integer"),
    "top-level-list": (lambda r: [r], "record: Input should be a valid dictionary"),
    "top-level-number": (lambda r: 3, "record: Input should be a valid dictionary"),
}
BAD_TEXTS = {
    "not-json": ("{not json", "not valid JSON"),
    "truncated": (None, "not valid JSON"),  # the first half of a real record
    "deeply-nested": ("[" * 10_000 + "]" * 10_000, "JSON nested too deeply"),
    "deeply-nested-field": ('{"record_version": 1, "output": ' + "{\"a\": " * 10_000 + "0" + "}" * 10_001,
                            "JSON nested too deeply"),
    "empty": ("", "not valid JSON"),
    "not-utf8": (b"\xff\xfe{}", "not UTF-8 text"),
}


def _plant_bad_records(tree) -> dict[str, str]:
    """One output per spoiled record beside the good ones; returns record path -> detail fragment."""
    good = json.loads(Path("results/out.txt" + RECORD_SUFFIX).read_text())
    table = json.loads(Path("results/table" + RECORD_SUFFIX).read_text())
    expected = {}
    for name, (spoil, fragment) in BAD_RECORDS.items():
        base = json.loads(json.dumps(table if name.startswith("dir-") else good))
        Path("results", name).write_text("output\n")
        Path("results", name + RECORD_SUFFIX).write_text(json.dumps(spoil(base)))
        expected[str(Path("results", name + RECORD_SUFFIX))] = fragment
    for name, (text, fragment) in BAD_TEXTS.items():
        if text is None:
            full = Path("results/out.txt" + RECORD_SUFFIX).read_text()
            text = full[: len(full) // 2]
        Path("results", name).write_text("output\n")
        target = Path("results", name + RECORD_SUFFIX)
        target.write_bytes(text) if isinstance(text, bytes) else target.write_text(text)
        expected[str(target)] = fragment
    return expected


def test_bad_records_are_problems_of_their_own(tree):
    expected = _plant_bad_records(tree)
    problems = verify("results")
    assert {p.path: p.kind for p in problems} == {path: "bad-record" for path in expected}
    for p in problems:
        assert expected[p.path] in p.detail and "\n" not in p.detail, (p.path, p.detail)
    # the good records were still checked: a modified output next to the bad records is found
    Path("results/out.txt").write_text("changed\n")
    assert (str(Path("results/out.txt")), "modified") in {(p.path, p.kind) for p in verify("results")}


def test_bad_records_on_the_command_line(tree):
    _plant_bad_records(tree)
    Path("results/out.txt").write_text("changed\n")
    problems = verify("results")
    assert len(problems) == len(BAD_RECORDS) + len(BAD_TEXTS) + 1
    _assert_cli_reports("results", problems)


def test_directory_record_whose_files_disagree_with_its_sha256(tree):
    rec_path = Path("results/table" + RECORD_SUFFIX)
    rec = json.loads(rec_path.read_text())
    rec["output"]["files"]["a.csv"] = "0" * 64  # files edited to match a changed output, digest not
    rec_path.write_text(json.dumps(rec))
    ((path, kind, detail),) = [(p.path, p.kind, p.detail) for p in verify("results")]
    assert (path, kind) == (str(rec_path), "bad-record") and "does not match the digest" in detail


def test_unreadable_record(tree, monkeypatch):
    rec_path = Path("results/out.txt" + RECORD_SUFFIX)
    read_text = Path.read_text

    def refuse(self, *a, **kw):
        if self == rec_path:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", refuse)
    assert [(p.path, p.kind, p.detail) for p in verify("results")] == [
        (str(rec_path), "bad-record", "unreadable (PermissionError: Permission denied)")]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs file permissions that apply")
def test_unreadable_record_on_the_command_line(tree):
    rec_path = Path("results/out.txt" + RECORD_SUFFIX)
    rec_path.chmod(0)
    try:
        problems = verify("results")
        assert [(p.path, p.kind) for p in problems] == [(str(rec_path), "bad-record")]
        _assert_cli_reports("results", problems)
    finally:
        rec_path.chmod(0o644)


def test_record_that_is_not_a_regular_file(tree):
    rec_path = Path("results/out.txt" + RECORD_SUFFIX)
    rec_path.unlink()
    os.mkfifo(rec_path)  # reading it would block for ever
    assert [(p.path, p.kind, p.detail) for p in verify("results")] == [
        (str(rec_path), "bad-record", "not a regular file")]


def test_odd_file_names_give_one_line_each(tree):
    Path("results/two\nlines.txt").write_text("?")
    (problem,) = verify("results")
    assert problem.kind == "no-record" and problem.path == str(Path("results/two\\nlines.txt"))


def test_stale_input_that_changed_kind(tree):
    """An empty input file and an empty directory hash alike; the recorded kind tells them apart."""
    Path("inputs/empty.txt").write_text("")
    _record(["results/out.txt"], ["inputs/empty.txt"])
    Path("inputs/empty.txt").unlink()
    Path("inputs/empty.txt").mkdir()
    assert [(p.kind, p.detail) for p in verify("results") if p.path == str(Path("results/out.txt"))] == [
        ("stale-input", "input inputs/empty.txt was a file when the output was made, now a directory")]
