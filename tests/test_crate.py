"""Results as a Workflow Run RO-Crate: export, the ``rocrate`` package's own reader, import, and
Snakemake scheduling no search after an import. A tiny tree made with ``write_records`` covers the
mapping and the refusals in seconds; the smoke workflow, run once in a copy of the repository,
covers a real run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from neagari.cli import main
from neagari.workflow.crate import (ENGINE_RUN_ID, METADATA_NAME, PROFILES, RO_CRATE, WORKFLOW_RO_CRATE,
                                    WORKFLOW_RUN_ID, CrateError, check_crate, export_crate,
                                    snakemake_record_path)
from neagari.workflow.provenance import RECORD_SUFFIX, now_iso, verify, write_records

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
# the rules that render the paper from the results; an import may leave them to run, nothing else
PAPER_RULES = {"build_paper", "all"}


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def as_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


def ids(value) -> list[str]:
    return [v["@id"] if isinstance(v, dict) else v.id if hasattr(v, "id") else v for v in as_list(value)]


def entity_types(entity) -> set[str]:
    return set(as_list(entity.type if hasattr(entity, "type") else entity["@type"]))


def rewrite_zip(src: Path, dst: Path, change: dict[str, bytes | None] | None = None,
                add: dict[str, bytes] | None = None) -> None:
    """A copy of a crate with members replaced (None: dropped) or added."""
    change, add = change or {}, add or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in change:
                if change[info.filename] is not None:
                    zout.writestr(info, change[info.filename])
            else:
                zout.writestr(info, zin.read(info))
        for name, data in add.items():
            zout.writestr(zipfile.ZipInfo(name), data)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "neagari.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


# ---------------------------------------------------------------------------- a tiny tree


def _tiny_sources(root: Path) -> None:
    (root / "scripts").mkdir(parents=True)
    (root / "resources").mkdir()
    (root / "rules").mkdir()
    (root / "Snakefile").write_text('include: "rules/tiny.smk"\n')
    (root / "rules/tiny.smk").write_text("rule make_x:\n    output: 'results/a/x.txt'\n")
    (root / "scripts/make.py").write_text("print('made')\n")
    (root / "resources/in.txt").write_text("input\n")


@pytest.fixture
def tiny_tree(tmp_path, monkeypatch) -> Path:
    """Three records of two rule executions: a file made from a resource, then a directory and
    a file made from it (Snakemake job records included)."""
    root = tmp_path / "work"
    _tiny_sources(root)
    monkeypatch.chdir(root)  # records hold paths relative to the working directory
    (root / "results/a").mkdir(parents=True)
    (root / "results/a/x.txt").write_text("x\n")
    t = now_iso()
    write_records(["results/a/x.txt"], rule="make_x", inputs=["resources/in.txt"], params={"n": 1},
                  wildcards={"w": "a"}, config={"seed": 0, "k": {"a": 1}}, script="scripts/make.py", started_at=t)
    (root / "results/d/dir/sub").mkdir(parents=True)
    (root / "results/d/dir/f1").write_text("1")
    (root / "results/d/dir/sub/f2").write_text("2")
    (root / "results/d/y.txt").write_text("y")
    write_records(["results/d/dir", "results/d/y.txt"], rule="make_y", inputs={"x": "results/a/x.txt"},
                  params={}, wildcards={}, config={"seed": 1}, script="scripts/make.py", started_at=t, seed=3)
    metadata = root / ".snakemake/metadata"
    metadata.mkdir(parents=True)
    for key in ("results/a/x.txt", "results/d/dir", "results/d/y.txt"):
        snakemake_record_path(metadata, key).write_text(json.dumps({"rule": "r", "params": [], "input": []}))
    return root


def test_snakemake_record_path_is_snakemakes(tmp_path):
    from snakemake.persistence.file import FilePersistence

    persistence = FilePersistence(path=tmp_path / ".snakemake")
    for key in ("results/a.txt", "results/" + "deep/" * 80 + "long.parquet"):  # the long one is split
        ours = snakemake_record_path(tmp_path / ".snakemake/metadata", key)
        assert Path(persistence._record_path(persistence._metadata_path, key)) == ours


def test_tiny_round_trip(tiny_tree, tmp_path):
    from rocrate.rocrate import ROCrate

    out = tmp_path / "run.crate.zip"
    assert main(["provenance", "export", "results", "--out", str(out)]) == 0
    crate = ROCrate(out)  # the package's own reader
    assert crate.mainEntity.id == "Snakefile"
    assert {"File", "ComputationalWorkflow", "HowTo"} <= entity_types(crate.mainEntity)
    assert set(PROFILES) | {WORKFLOW_RO_CRATE} <= set(ids(crate.root_dataset["conformsTo"]))
    assert ids(crate.metadata["conformsTo"]) == [RO_CRATE]
    actions = {e.id: e for e in crate.get_entities() if "CreateAction" in entity_types(e)}
    steps = {i: a for i, a in actions.items() if i != WORKFLOW_RUN_ID}
    assert sorted(a["name"] for a in steps.values()) == ["make_x", "make_y"]
    x = next(a for a in steps.values() if a["name"] == "make_x")
    y = next(a for a in steps.values() if a["name"] == "make_y")
    assert ids(x["instrument"]) == ["scripts/make.py"] and ids(x["result"]) == ["results/a/x.txt"]
    assert "resources/in.txt" in ids(x["object"]) and "results/a/x.txt" in ids(y["object"])
    assert sorted(ids(y["result"])) == ["results/d/dir/", "results/d/y.txt"]
    assert x["startTime"] and x["endTime"]
    values = {e["name"]: e["value"] for e in x["object"] if "PropertyValue" in entity_types(e)}
    assert values == {"seed": "0", "k": '{"a":1}', "params.n": "1", "wildcards.w": '"a"'}
    assert actions[WORKFLOW_RUN_ID]["instrument"].id == "Snakefile"
    assert crate.get(ENGINE_RUN_ID)["result"].id == WORKFLOW_RUN_ID
    dataset = crate.get("results/d/dir/")
    assert sorted(ids(dataset["hasPart"])) == ["results/d/dir/f1", "results/d/dir/sub/f2"]
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        for e in crate.get_entities():
            if "File" in entity_types(e) and not e.id.startswith("#") and e.id != METADATA_NAME:
                data = zf.read(e.id)
                assert e["sha256"] == hashlib.sha256(data).hexdigest() and int(e["contentSize"]) == len(data), e.id
    assert {"results/a/x.txt.prov.json", "results/d/dir.prov.json", "snakemake-metadata.json"} <= names
    # a checkout without results: every file and record restored, byte for byte
    dest = tmp_path / "dest"
    _tiny_sources(dest)
    time.sleep(0.01)
    assert main(["provenance", "import", str(out), "--into", str(dest)]) == 0
    for rel in ("results/a/x.txt", "results/a/x.txt.prov.json", "results/d/dir/sub/f2", "results/d/dir.prov.json"):
        assert (dest / rel).read_bytes() == (tiny_tree / rel).read_bytes(), rel
    assert verify(dest / "results") == []
    # times in the run's order, newer than the sources, the directory stamped for Snakemake
    mt = {rel: (dest / rel).stat().st_mtime_ns for rel in ("scripts/make.py", "resources/in.txt", "results/a/x.txt",
                                                          "results/d/y.txt", "results/d/dir/.snakemake_timestamp")}
    assert mt["scripts/make.py"] < mt["results/a/x.txt"] and mt["resources/in.txt"] < mt["results/a/x.txt"]
    assert mt["results/a/x.txt"] < mt["results/d/y.txt"] == mt["results/d/dir/.snakemake_timestamp"]
    assert mt["results/a/x.txt"] - mt["scripts/make.py"] >= 10**9
    record = snakemake_record_path(dest / ".snakemake/metadata", "results/d/dir")
    assert json.loads(record.read_text())["rule"] == "r"


def test_import_refuses_to_overwrite_without_force(tiny_tree, tmp_path, capsys):
    out = tmp_path / "run.crate.zip"
    export_crate("results", out)
    dest = tmp_path / "dest"
    _tiny_sources(dest)
    (dest / "results/a").mkdir(parents=True)
    (dest / "results/a/x.txt").write_text("mine")
    capsys.readouterr()
    assert main(["provenance", "import", str(out), "--into", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results/a/x.txt exists" in err and "--force" in err
    assert (dest / "results/a/x.txt").read_text() == "mine" and not (dest / "results/d").exists()
    assert main(["provenance", "import", str(out), "--into", str(dest), "--force"]) == 0
    assert (dest / "results/a/x.txt").read_text() == "x\n" and verify(dest / "results") == []


def test_import_refuses_tampered_and_escaping_members(tiny_tree, tmp_path, capsys):
    out = tmp_path / "run.crate.zip"
    export_crate("results", out)
    cases = {
        "tampered": ({"results/d/y.txt": b"z"}, {}, "results/d/y.txt: sha256"),
        "tampered record": ({"results/a/x.txt.prov.json": b"{}"}, {}, "results/a/x.txt.prov.json: sha256"),
        "missing": ({"results/d/dir/f1": None}, {}, "results/d/dir/f1: described in the metadata but not in"),
        "dotdot": ({}, {"results/../../evil.txt": b"evil"}, "'results/../../evil.txt' leaves the crate"),
        "absolute": ({}, {"/tmp/evil.txt": b"evil"}, "'/tmp/evil.txt' has an absolute path"),
    }
    for name, (change, add, message) in cases.items():
        bad = tmp_path / f"{name}.zip"
        rewrite_zip(out, bad, change, add)
        dest = tmp_path / f"dest-{name}"
        _tiny_sources(dest)
        capsys.readouterr()
        assert main(["provenance", "import", str(bad), "--into", str(dest)]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (name, err)
        assert not (dest / "results").exists() and not (tmp_path / "evil.txt").exists(), name
        assert [p.name for p in dest.iterdir() if p.name.startswith(".neagari-import")] == [], name


def test_export_refuses_a_tree_that_does_not_verify(tiny_tree, tmp_path):
    (tiny_tree / "results/d/y.txt").write_text("changed")
    with pytest.raises(CrateError, match=r"1 provenance problem\(s\), first: modified: results/d/y.txt"):
        export_crate("results", tmp_path / "run.crate.zip")
    assert not (tmp_path / "run.crate.zip").exists()
    with pytest.raises(CrateError, match="inside results"):
        export_crate("results", "results/run.crate.zip")


def test_check_crate_wants_the_profiles(tiny_tree, tmp_path):
    out = tmp_path / "run.crate.zip"
    export_crate("results", out)
    with zipfile.ZipFile(out) as zf:
        metadata = json.loads(zf.read(METADATA_NAME))
    root = next(e for e in metadata["@graph"] if e["@id"] == "./")
    root["conformsTo"] = [c for c in root["conformsTo"] if "wfrun/workflow" not in c["@id"]]
    with pytest.raises(CrateError, match="wfrun/workflow/0.6"):
        check_crate(metadata)


# ---------------------------------------------------------------------------- the smoke workflow


def _snakemake(cwd: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([str(SNAKEMAKE), "--cores", "2", "--configfile", "config/smoke.yaml", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def scheduled_rules(dry_run: subprocess.CompletedProcess) -> set[str]:
    """The rules a ``snakemake -n`` would run, read from its job list."""
    text = dry_run.stdout + dry_run.stderr
    if "Nothing to be done" in text:
        return set()
    return set(re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):", text, flags=re.M))


@pytest.mark.slow
def test_smoke_results_travel_as_a_crate(smoke_run, tmp_path):
    from rocrate.rocrate import ROCrate

    out = tmp_path / "run.crate.zip"
    res = cli("provenance", "export", "results", "--out", str(out), cwd=smoke_run)
    assert res.returncode == 0, res.stderr
    records = sorted(smoke_run.joinpath("results").rglob(f"*{RECORD_SUFFIX}"))
    jobs: dict[str, list[dict]] = {}
    for r in records:
        rec = json.loads(r.read_text())
        jobs.setdefault(json.dumps({k: v for k, v in rec.items() if k != "output"}, sort_keys=True), []).append(rec)

    crate = ROCrate(out)
    assert crate.mainEntity.id == "Snakefile" and "ComputationalWorkflow" in entity_types(crate.mainEntity)
    assert set(PROFILES) | {WORKFLOW_RO_CRATE} <= set(ids(crate.root_dataset["conformsTo"]))
    steps = [e for e in crate.get_entities() if "CreateAction" in entity_types(e) and e.id != WORKFLOW_RUN_ID]
    # one action per rule execution; every record's output is the result of exactly one
    assert len(steps) == len(jobs)
    results = [r for s in steps for r in ids(s["result"])]
    assert sorted(r.rstrip("/") for r in results) == sorted(rec["output"]["path"] for recs in jobs.values()
                                                         for rec in recs)
    by_output = {r.rstrip("/"): s for s in steps for r in ids(s["result"])}
    for recs in jobs.values():
        rec = recs[0]
        action = by_output[rec["output"]["path"]]
        assert action["name"] == rec["rule"] and action["startTime"] == rec["started_at"]
        assert action["endTime"] == rec["finished_at"]
        assert ids(action["instrument"]) == [rec["script"]["path"]]
        # a job with no inputs and no params (install_wordnet) has no object
        files = [o for o in (action.get("object") or []) if "PropertyValue" not in entity_types(o)]
        assert len(files) == len({i["path"] for i in rec["inputs"]}), rec["rule"]
    commit = json.loads(records[0].read_text())["git"]["commit"]
    assert crate.get(f"#git-{commit}")["identifier"] == commit and crate.mainEntity["version"] == commit
    smk_version = json.loads(records[0].read_text())["environment"]["packages"]["snakemake"]
    assert crate.get(f"https://pypi.org/project/snakemake/{smk_version}/")["version"] == smk_version
    n_files = 0
    with zipfile.ZipFile(out) as zf:
        for e in crate.get_entities():
            if "File" in entity_types(e) and not e.id.startswith("#") and e.id != METADATA_NAME:
                assert e["sha256"] == hashlib.sha256(zf.read(e.id)).hexdigest(), e.id
                n_files += 1
        assert {r.relative_to(smoke_run).as_posix() for r in records} <= set(zf.namelist())
    assert n_files > len(records)

    # a fresh clone of the same commit: the imported tree verifies, Snakemake runs no search
    dest = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(smoke_run), str(dest)], check=True)
    res = cli("provenance", "import", str(out), cwd=dest)
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    res = cli("provenance", "verify", "results", cwd=dest)
    assert res.returncode == 0, res.stdout[-3000:]
    dry = _snakemake(dest, "-n", timeout=600)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert scheduled_rules(dry) <= PAPER_RULES, (dry.stdout + dry.stderr)[-3000:]
    assert "search" not in scheduled_rules(dry)

    # a crate with a member changed, or one that climbs out, is refused in one line
    for name, change, add, message in (
            ("tampered", {"results/search/tiny-qat/pass1/math/summary.json": b"{}"}, {},
             "results/search/tiny-qat/pass1/math/summary.json: sha256"),
            ("dotdot", {}, {"../outside.txt": b"x"}, "'../outside.txt' leaves the crate")):
        bad = tmp_path / f"{name}.zip"
        rewrite_zip(out, bad, change, add)
        target = tmp_path / f"into-{name}"
        res = cli("provenance", "import", str(bad), "--into", str(target), cwd=tmp_path)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
        assert not (target / "results").exists() and not (tmp_path / "outside.txt").exists()
