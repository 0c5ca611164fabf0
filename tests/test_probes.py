"""Probe files are validated at the boundary: strict types, distinct answers, the model's vocabulary
and context, unreadable or malformed files. Each refusal is one ProbeError line naming the file and
the probe, at function level and through the command line (exit 2, one stderr line, no traceback).

Against the paper's published files (tests/data/upstream): the controls its pipeline carried from
domain to domain, and the probes its calibration scored at a shared or a whitespace token."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from neagari.cli import main as cli_main
from neagari.engine.engine import Engine
from neagari.search.calibrate import calibrate_document
from neagari.search.probes import (Probe, ProbeError, encode_probes, load_probes, probe_from_dict, score_probes,
                                   token_ids)
from neagari.search.proposal import ProposalConfig
from neagari.search.runner import Search, SearchConfig

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "resources/probes/smoke.json"
MODEL = "tied_gqa"  # vocabulary 512, context length 512
BASE = {"name": "x", "prompt": "The capital of France is", "correct": " Paris", "wrong": " Rome"}
LONG_PROMPT = "word " * 200  # > 512 tokens under the fixture tokenizer


def write_doc(path: Path, *probes: dict) -> Path:
    path.write_text(json.dumps({"domain": "t", "probes": {"target": list(probes)}}))
    return path


@pytest.fixture(scope="module")
def engine(fixture_models):
    return Engine.load(fixture_models[MODEL])


def search(engine, model_path, probes, out):
    cfg = SearchConfig(iterations=2, proposal=ProposalConfig(layers=(0,)))
    return Search(engine, model_path, probes, [], cfg, out)


# ---------------------------------------------------------------------------- function level

@pytest.mark.parametrize("key", ["base_correct_id", "base_wrong_id"])
@pytest.mark.parametrize("value,shown", [(5.7, "5.7"), ("5", "'5'"), (True, "True"), (5.0, "5.0"), (-1, "-1")])
def test_token_ids_are_not_coerced(tmp_path, key, value, shown):
    ids = {"base_correct_id": 7, "base_wrong_id": 9, key: value}
    path = write_doc(tmp_path / "probes.json", BASE, dict(BASE, name="y", **ids))
    with pytest.raises(ProbeError) as e:
        load_probes(path)
    msg = str(e.value)
    assert msg.startswith("probes.json:probes.target[1] (name 'y'): ") and key in msg and msg.endswith(shown)
    assert "\n" not in msg


@pytest.mark.parametrize("key,value", [("prompt", 3), ("correct", None), ("wrong", [" Rome"]), ("name", 5),
                                       ("base_gap", "0.5")])
def test_strings_and_gap_are_not_coerced(tmp_path, key, value):
    path = write_doc(tmp_path / "p.json", dict(BASE, **{key: value}))
    with pytest.raises(ProbeError, match=rf"^p\.json:probes\.target\[0\].*: {key} must be "):
        load_probes(path)


def test_missing_field_is_named(tmp_path):
    d = {k: v for k, v in BASE.items() if k != "wrong"}
    with pytest.raises(ProbeError, match=r"^p\.json:probes\.target\[0\] \(name 'x'\): wrong is missing$"):
        load_probes(write_doc(tmp_path / "p.json", d))


def test_same_answer_text_or_stored_id_is_refused(tmp_path):
    with pytest.raises(ProbeError, match=r"p\.json:probes\.target\[0\] \(name 'x'\): correct and wrong are the "
                                         r"same text ' Paris'"):
        load_probes(write_doc(tmp_path / "p.json", dict(BASE, wrong=" Paris")))
    with pytest.raises(ProbeError, match=r"base_correct_id and base_wrong_id are the same token 5"):
        load_probes(write_doc(tmp_path / "p.json", dict(BASE, base_correct_id=5, base_wrong_id=5)))
    # same text with two different stored ids (calibration can decode a rival to the same text): kept
    [p] = load_probes(write_doc(tmp_path / "p.json", dict(BASE, wrong=" Paris", base_correct_id=5, base_wrong_id=6)))
    assert (p.correct_id, p.wrong_id) == (5, 6)


def test_same_token_after_tokenization_is_refused(engine, fixture_models, tmp_path):
    c = engine.tokenizer.encode(" Rome")[0]
    path = write_doc(tmp_path / "p.json", BASE, dict(BASE, name="y", base_correct_id=c))
    probes = load_probes(path)
    with pytest.raises(ProbeError, match=rf"^p\.json:probes\.target\[1\] \(name 'y'\): correct and wrong are the "
                                         rf"same token {c} after tokenization"):
        score_probes(engine, probes)
    with pytest.raises(ProbeError, match=r"same token"):
        search(engine, fixture_models[MODEL], probes, tmp_path / "s")


def test_out_of_vocabulary_id_is_refused_by_score_and_search(engine, fixture_models, tmp_path):
    probes = load_probes(write_doc(tmp_path / "p.json", dict(BASE, base_correct_id=512, base_wrong_id=9)))
    expected = r"^p\.json:probes\.target\[0\] \(name 'x'\): base_correct_id is 512, outside the vocabulary of 512"
    with pytest.raises(ProbeError, match=expected):
        score_probes(engine, probes)
    with pytest.raises(ProbeError, match=expected):
        search(engine, fixture_models[MODEL], probes, tmp_path / "s")


def test_prompt_longer_than_context_is_refused(engine, fixture_models, tmp_path):
    n = len(engine.tokenizer.encode(LONG_PROMPT))
    probes = load_probes(write_doc(tmp_path / "p.json", BASE, dict(BASE, name="long", prompt=LONG_PROMPT)))
    expected = (rf"^p\.json:probes\.target\[1\] \(name 'long'\): prompt is {n} tokens; .* needs {n + 1} positions, "
                r"the model's context length is 512$")
    with pytest.raises(ProbeError, match=expected):
        score_probes(engine, probes)
    with pytest.raises(ProbeError, match=expected):
        search(engine, fixture_models[MODEL], probes, tmp_path / "s")
    doc = json.loads((tmp_path / "p.json").read_text())
    with pytest.raises(ProbeError, match=r"probes\.target\[1\] \(name 'long'\): prompt is"):
        calibrate_document(engine, doc)


def test_context_boundary_leaves_room_for_the_next_token(engine):
    p = Probe("b", "The capital of France is", " Paris", " Rome")
    n = len(token_ids(p, engine.tokenizer)[0])
    fake = SimpleNamespace(tokenizer=engine.tokenizer, cfg=SimpleNamespace(vocab_size=512, context_length=n + 1),
                           opts=SimpleNamespace(max_positions=None))
    assert encode_probes(fake, [p])[0][0] == engine.tokenizer.encode(p.prompt)
    fake.cfg.context_length = n
    with pytest.raises(ProbeError, match=rf"probe 'b': prompt is {n} tokens"):
        encode_probes(fake, [p])
    fake.cfg.context_length, fake.opts.max_positions = 4096, n  # a load-time cap wins
    with pytest.raises(ProbeError, match=rf"context length is {n}$"):
        encode_probes(fake, [p])


@pytest.mark.parametrize("key", ["prompt", "correct", "wrong", "name"])
def test_lone_surrogate_is_refused(tmp_path, key):
    path = tmp_path / "p.json"
    path.write_text('{"probes": {"target": [%s]}}' % json.dumps(dict(BASE, **{key: "a\ud800"})))
    with pytest.raises(ProbeError, match=rf"^p\.json:probes\.target\[0\].*: {key} is not valid Unicode text"):
        load_probes(path)


@pytest.mark.parametrize("doc,expected", [
    ({"probes": [BASE], "\ud800x": 1}, r"/p\.json: top-level key '\\ud800x' is not valid Unicode text"),
    ({"probes": [dict(BASE, **{"\ud8ca": "smoke"})]},
     r"^p\.json:probes\.target\[0\] \(name 'x'\): key '\\ud8ca' is not valid Unicode text"),
])
def test_lone_surrogate_key_is_refused(tmp_path, doc, expected):
    """A key the schema cannot read: one line saying so (a top-level one was a StopIteration traceback)."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProbeError, match=expected):
        load_probes(path)
    # in values, lone surrogates of keys other than the probe's texts are carried unvalidated
    path.write_text(json.dumps({"probes": [dict(BASE, category="\ud800", extra={"\ud800": 1})]}))
    assert load_probes(path)[0].extra["category"] == "\ud800"


def test_deeply_nested_json_is_refused(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ProbeError, match=r"p\.json: not usable JSON \(nested too deeply\)"):
        load_probes(path)
    path.write_text('{"probes": [{"prompt": %s, "correct": "a", "wrong": "b"}]}' % ("[" * 900 + "]" * 900))
    with pytest.raises(ProbeError, match=r"p\.json:probes\.target\[0\]: prompt must be a string, got \[\[\["):
        load_probes(path)


def test_unreadable_file_is_refused(tmp_path, monkeypatch):
    path = write_doc(tmp_path / "p.json", BASE)
    real = Path.read_bytes

    def denied(self):
        if self.name == "p.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ProbeError, match=rf"^{path}: cannot read \(Permission denied\)$"):
        load_probes(path)


def test_directory_missing_file_and_bad_bytes_are_refused(tmp_path):
    (tmp_path / "d.json").mkdir()
    with pytest.raises(ProbeError, match=r"d\.json: is a directory, not a probe file"):
        load_probes(tmp_path / "d.json")
    with pytest.raises(ProbeError, match=r"nope\.json: no such file"):
        load_probes(tmp_path / "nope.json")
    (tmp_path / "b.json").write_bytes(b'{"probes": [{"prompt": "\xff\xfe"}]}')
    with pytest.raises(ProbeError, match=r"b\.json: not UTF-8 text \(byte 0xff at offset 24\)"):
        load_probes(tmp_path / "b.json")


@pytest.mark.parametrize("text,expected", [
    ("[1, 2]", "the top level must be an object with a 'probes' key, got list"),
    ("5", "the top level must be an object with a 'probes' key, got int"),
    ('"probes"', "the top level must be an object with a 'probes' key, got str"),
    ("null", "the top level must be an object with a 'probes' key, got NoneType"),
    ('{"domain": "x"}', "expected an object with a 'probes' list or object"),
    ('{"probes": 5}', "'probes' must be a list or an object of lists, got int"),
    ('{"probes": {"target": {"a": 1}}}', "p.json: probes.target is not a list"),
    ('{"probes": [5]}', "probes.target[0]: a probe must be an object, got int"),
    ('{"probes": {"a b": [5]}}', "p.json:probes['a b'][0]: a probe must be an object, got int"),
])
def test_malformed_document_is_refused(tmp_path, text, expected):
    (tmp_path / "p.json").write_text(text)
    with pytest.raises(ProbeError) as e:
        load_probes(tmp_path / "p.json")
    assert "p.json" in str(e.value) and "\n" not in str(e.value) and expected in str(e.value)


def test_calibration_validates_the_document(engine):
    with pytest.raises(ProbeError, match="probe document: the top level must be an object"):
        calibrate_document(engine, [BASE])
    with pytest.raises(ProbeError, match=r"probes\.target\[0\] \(name 'x'\): prompt must be a string, got 1\.5"):
        calibrate_document(engine, {"probes": [dict(BASE, prompt=1.5)]})
    # the heuristic wrong answer may equal the correct one: calibration replaces it
    doc = calibrate_document(engine, {"probes": {"target": [dict(BASE, wrong=" Paris")]}})
    assert doc["probes"]["target"][0]["base_wrong_id"] != doc["probes"]["target"][0]["base_correct_id"]


# ---------------------------------------------------------------------------- valid files unchanged

def _old_loader(path: Path) -> list[Probe]:
    """The loader before validation, for valid files."""
    doc = json.loads(path.read_text())
    groups = doc["probes"] if isinstance(doc["probes"], dict) else {"target": doc["probes"]}
    known = {"name", "prompt", "correct", "wrong", "base_correct_id", "base_wrong_id", "base_gap"}
    return [Probe(name=str(d.get("name", f"{path.name}:probes.{r}[{i}]")), prompt=d["prompt"], correct=d["correct"],
                  wrong=d["wrong"], role=r, correct_id=d.get("base_correct_id"), wrong_id=d.get("base_wrong_id"),
                  base_gap=d.get("base_gap"), extra={k: v for k, v in d.items() if k not in known})
            for r, items in groups.items() for i, d in enumerate(items)]


def test_valid_files_load_unchanged(engine, tmp_path):
    new, old = load_probes(SMOKE), _old_loader(SMOKE)
    assert new == old and [p.extra for p in new] == [p.extra for p in old]
    assert [p.role for p in new] == ["target"] * 5 + ["promoted_controls"] * 3
    assert new[0].where == "smoke.json:probes.target[0]"
    # a calibrated copy (ids, base_gap, heuristic_wrong, _calibration) and a promoted-controls file with
    # uncalibrated (null) ids, as scripts/search.py writes, load too
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(calibrate_document(engine, json.loads(SMOKE.read_text()))))
    assert load_probes(cal) == _old_loader(cal) and all(p.correct_id is not None for p in load_probes(cal))
    promoted = {"domain": "promoted", "version": "neagari", "probes": {"promoted_controls": [
        {"name": "n", "prompt": "a b", "correct": " c", "wrong": " d", "base_correct_id": None, "base_wrong_id": None}]}}
    (tmp_path / "pr.json").write_text(json.dumps(promoted))
    assert load_probes(tmp_path / "pr.json") == _old_loader(tmp_path / "pr.json")
    (tmp_path / "empty.json").write_text(json.dumps({"probes": {"promoted_controls": []}}))
    assert load_probes(tmp_path / "empty.json", allow_empty=True) == []
    # a plain list is the target group; integers are numbers for base_gap; scores are the same
    (tmp_path / "list.json").write_text(json.dumps({"probes": [dict(BASE, base_gap=0)]}))
    assert load_probes(tmp_path / "list.json")[0].base_gap == 0
    ref = [engine.tokenizer.encode(p.prompt) for p in old]
    assert [e[0] for e in encode_probes(engine, new)] == ref


def test_toy_and_derived_probe_sets_load():
    from neagari.embedded import toydata

    for name, doc in toydata.build_probe_sets(0).items():
        for role, items in doc["probes"].items():
            for i, d in enumerate(items):
                probe_from_dict(d, role, f"{name}:probes.{role}[{i}]")
    training, _ = toydata.build_verbatim_sets(0)
    for role, items in training["probes"].items():
        for i, d in enumerate(items):
            probe_from_dict(d, role, f"verbatim:probes.{role}[{i}]", distinct=False)


# ---------------------------------------------------------------------------- the command line

def _denied_runner() -> list[str]:
    """As root a chmod 000 file is still readable: simulate the refusal inside the CLI process."""
    code = ("import pathlib, runpy; real = pathlib.Path.read_bytes\n"
            "def rb(self):\n"
            "    if self.name == 'probes.json': raise PermissionError(13, 'Permission denied', str(self))\n"
            "    return real(self)\n"
            "pathlib.Path.read_bytes = rb; runpy.run_module('neagari.cli', run_name='__main__')")
    return [sys.executable, "-c", code]


def _case(tmp_path: Path, case: str) -> tuple[Path, str, list[str], list[str]]:
    """(probe file, how the error names it, what else it must say, command prefix) of one refusal class."""
    p = tmp_path / "probes.json"
    prefix = [sys.executable, "-m", "neagari.cli"]
    cases = {
        "float_id": (dict(BASE, base_correct_id=5.7, base_wrong_id=9), "base_correct_id must be an integer, got 5.7"),
        "string_id": (dict(BASE, base_correct_id=7, base_wrong_id="5"), "base_wrong_id must be an integer, got '5'"),
        "bool_id": (dict(BASE, base_correct_id=True, base_wrong_id=9), "base_correct_id must be an integer, got True"),
        "same_text": (dict(BASE, wrong=" Paris"), "correct and wrong are the same text"),
        "same_id": (dict(BASE, base_correct_id=5, base_wrong_id=5), "are the same token 5"),
        "oov": (dict(BASE, base_correct_id=100_000, base_wrong_id=9), "base_correct_id is 100000, outside the vocab"),
        "long": (dict(BASE, prompt=LONG_PROMPT), "the model's context length is 512"),
    }
    if case in cases:
        d, expected = cases[case]
        write_doc(p, d)
        return p, "probes.json:probes.target[0] (name 'x'): ", [expected], prefix
    if case == "surrogate":
        p.write_text('{"probes": [%s]}' % json.dumps(dict(BASE, prompt="a\ud800")))
        return p, "probes.json:probes.target[0] (name 'x'): ", ["prompt is not valid Unicode text"], prefix
    if case == "nested":
        p.write_text("[" * 100_000 + "]" * 100_000)
        return p, "probes.json: ", ["nested too deeply"], prefix
    if case == "unreadable":
        write_doc(p, BASE)
        if os.geteuid() == 0:
            prefix = _denied_runner()
        else:
            p.chmod(0)
        return p, "probes.json: ", ["cannot read (Permission denied)"], prefix
    if case == "directory":
        p.mkdir()
        return p, "probes.json: ", ["is a directory"], prefix
    if case == "not_utf8":
        p.write_bytes(b'{"probes": [{"prompt": "\xff"}]}')
        return p, "probes.json: ", ["not UTF-8 text"], prefix
    if case == "top_level":
        p.write_text("[1, 2]")
        return p, "probes.json: ", ["the top level must be an object"], prefix
    raise AssertionError(case)


CLI_CASES = ["float_id", "string_id", "bool_id", "same_text", "same_id", "oov", "long", "surrogate", "nested",
             "unreadable", "directory", "not_utf8", "top_level"]


# A real process for a few cases (the whole path from the interpreter's start); the rest run the same
# main() in this process, which is much faster and goes through the same error mapping.
SUBPROCESS_CASES = {("float_id", "score"), ("long", "search"), ("nested", "search"), ("unreadable", "score")}


@pytest.mark.parametrize("command", ["score", "search"])
@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_with_one_line(fixture_models, tmp_path, case, command, capsys, monkeypatch):
    path, where, expected, prefix = _case(tmp_path, case)
    out = ["--out", str(tmp_path / "o.parquet")] if command == "score" else \
        ["--out", str(tmp_path / "run"), "--iterations", "2", "--layers", "0", "--quiet"]
    argv = [command, str(fixture_models[MODEL]), "--probes", str(path), *out]
    if (case, command) in SUBPROCESS_CASES:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        r = subprocess.run([*prefix, *argv], capture_output=True, text=True, env=env, timeout=300)
        rc, err = r.returncode, r.stderr
    else:
        if prefix[0] != sys.executable or prefix[1] != "-m":  # the simulated permission refusal, in process
            real = Path.read_bytes
            monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(
                PermissionError(13, "Permission denied", str(self))) if self.name == "probes.json" else real(self))
        rc, err = cli_main(argv), capsys.readouterr().err
    lines = err.splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("neagari: error: ") and str(path.name) in lines[0]
    assert where in lines[0] and all(e in lines[0] for e in expected), lines[0]
    assert not (tmp_path / "o.parquet").exists() and not (tmp_path / "run" / "patch.json").exists()


def test_cli_scores_and_searches_a_valid_file(fixture_models, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(calibrate_document(Engine.load(fixture_models[MODEL]), json.loads(SMOKE.read_text()))))
    for args in (["score", "--out", str(tmp_path / "o.parquet")],
                 ["search", "--out", str(tmp_path / "run"), "--iterations", "2", "--layers", "0", "--quiet"]):
        r = subprocess.run([sys.executable, "-m", "neagari.cli", args[0], str(fixture_models[MODEL]), "--probes",
                            str(cal), *args[1:]], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------- upstream's published runs
# tests/data/upstream: the paper's calibrated probe files and manifests as published, and the names
# its patch records give every search's controls and targets (README.md there).
UPSTREAM = REPO / "tests/data/upstream"
PUBLISHED = {"editing": "probes_editing.json", "instruction": "probes_instruction.json",
             "tool_calling": "probes_tool_calling.json", "math": "probes_math_gsm8k.json",
             "coding": "probes_coding.json"}
# the runs' own math and coding files were not the published ones (README.md)
PUBLISHED_AS_RUN = {"editing", "instruction", "tool_calling"}


def upstream_json(rel: str) -> dict:
    return json.loads((UPSTREAM / rel).read_text())


def published_file(domain: str) -> Path:
    return UPSTREAM / "probes/calibrated" / PUBLISHED[domain]


def named(names) -> list[Probe]:
    return [Probe(name=n, prompt="p", correct=" a", wrong=" b", role="control") for n in names]


def base_control_file(tmp_path: Path) -> Path:
    """Upstream's 23 base controls under their names: DEFAULT_CONTROL_PROBES, then the 10 MuSR and 10
    MMLU items every record starts its control list with."""
    names = upstream_json("patch_controls.json")["v2_patches/patch_tool_calling.json"]["controls"][:23]
    assert names[:3] == ["geo_france", "math_basic", "knowledge"]
    assert sum(n.startswith("musr_") for n in names) == 10 and sum(n.startswith("mmlu_") for n in names) == 10
    path = tmp_path / "base_controls.json"
    path.write_text(json.dumps({"probes": {"control": [
        {"name": n, "prompt": "p", "correct": " a", "wrong": " b"} for n in names]}}))
    return path


def upstream_pipeline(tmp_path, order, promotion="upstream", records=None):
    """Upstream's run_pipeline over the published files through our functions: per domain the
    controls its search scores, and how many controls it hands on (base + carried). A target is
    positive after its domain as its record says where ``records`` has one, else as its calibrated
    base gap says."""
    from neagari.search import split_probes
    from neagari.search.promotion import OWN_CONTROLS_CAP, carry_controls, promoted_targets

    base = base_control_file(tmp_path)
    carried, scored, after = [], [], []
    for d in order:
        rec = (records or {}).get(d)
        targets, controls = split_probes(published_file(d), [base], carried, own_cap=OWN_CONTROLS_CAP)
        if rec:
            targets = named(rec["targets"])
            final = [1.0 if p.name in rec["positive_after"] else -1.0 for p in targets]
            base_gaps = final  # records are read with the upstream rule only, which looks at the final gap
        else:
            final = base_gaps = [p.base_gap for p in targets]
        scored.append(controls)
        carried = carry_controls(carried, promoted_targets(targets, base_gaps, final, promotion), 23, 30, promotion)
        after.append(23 + len(carried))
    return scored, after


def test_upstream_promotion_gives_the_papers_control_counts(tmp_path):
    """PAPER.md §5 pass 1: 33/35/40/40/40 controls; the manifests: 30 handed on after every pass-1
    domain, 23 then 30 in pass 2 (which starts over from the base controls)."""
    v2, v3 = upstream_json("patches/v2_patches/manifest.json"), upstream_json("patches/v3_patches/manifest.json")
    scored, after = upstream_pipeline(tmp_path, v2["pipeline_order"])
    assert v2["max_controls"] == 30 and [len(c) for c in scored] == [33, 35, 40, 40, 40]
    assert after == [s["controls_after"] for s in v2["steps"]] == [30] * 5
    scored, after = upstream_pipeline(tmp_path, v3["pipeline_order"])
    assert after == [s["controls_after"] for s in v3["steps"]] == [23, 30, 30, 30, 30]
    records = upstream_json("patch_controls.json")
    assert [len(c) for c in scored] == [28] + [len(records[f"v3_patches/patch_{d}.json"]["controls"])
                                              for d in v3["pipeline_order"][1:]] == [28, 33, 40, 40, 40]
    # promoting only crossed targets carries nothing here: what the pipeline scored before
    scored, _ = upstream_pipeline(tmp_path, v2["pipeline_order"], promotion="crossed")
    assert [len(c) for c in scored] == [33, 28, 33, 33, 33]


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_upstream_promotion_gives_the_records_control_lists(tmp_path, version):
    """Each published record's control list, name by name: the base controls, the newest 7 targets
    positive after the domain before (their record's, or their calibrated gap), the file's own
    controls (where the published file is the run's)."""
    records = upstream_json("patch_controls.json")
    order = upstream_json(f"patches/{version}_patches/manifest.json")["pipeline_order"]
    own = {d: records.get(f"{version}_patches/patch_{d}.json") for d in order}
    scored, _ = upstream_pipeline(tmp_path, order, records={d: r for d, r in own.items() if r})
    checked = 0
    for d, controls, rec in zip(order, scored, own.values()):
        if rec is None:  # over the snapshot's size limit (v2 editing, v2/v3 instruction)
            continue
        names = [p.name for p in controls]
        n = len(names) if d in PUBLISHED_AS_RUN else len(names) - len(load_probes(published_file(d),
                                                                                 roles=["promoted_controls"]))
        assert names[:n] == rec["controls"][:n], d
        assert len(rec["controls"]) == len(names)
        checked += 1
    assert checked == (3 if version == "v2" else 4)


def test_paper_base_controls_are_the_records_items():
    """config/bonsai-8b.yaml takes the records' 20 benchmark controls by name, and the 1.7B config the
    same ones."""
    import yaml

    want = upstream_json("patch_controls.json")["v2_patches/patch_tool_calling.json"]["controls"][3:23]
    for config in ("bonsai-8b.yaml", "bonsai-1.7b.yaml"):
        spec = yaml.safe_load((REPO / "config" / config).read_text())["downloads"]["derived"]["base_controls"]
        assert spec["upstream_controls"] == "neagari/src/xor_search.py"
        got = [n for s in spec["samples"] for n in s["names"]]
        assert sorted(got) == sorted(want) and len(got) == 20, config
        for s in spec["samples"]:  # each MuSR file holds the domain its names give (the dataset card's splits)
            prefix = {"murder_mystery.csv": "musr_murder_mysteries_",
                      "object_placements.csv": "musr_object_placements_",
                      "test-00000-of-00001.parquet": "mmlu_"}[Path(s["file"]).name]
            assert all(n.startswith(prefix) for n in s["names"]), s["file"]


class PublishedPieces:
    """Token text by id, as far as the published files tell: upstream's calibration wrote each
    wrong answer as the text of its rival token (``base_wrong_id``)."""

    def __init__(self):
        self.pieces = {}
        for name in PUBLISHED.values():
            for group in upstream_json(f"probes/calibrated/{name}")["probes"].values():
                for d in group:
                    assert self.pieces.setdefault(d["base_wrong_id"], d["wrong"]) == d["wrong"]

    def decode(self, ids):
        return self.pieces.get(ids[0], "\ufffd")  # not a rival anywhere: shown as unknown


def test_token_report_finds_the_published_whitespace_targets():
    """Upstream stored id 220 (a bare space, the rival text of edit_format_1) as the correct token of
    every answer written ' <number>': the GSM8K set (' 250' among its targets) and two coding probes."""
    from neagari.search.calibrate import token_report
    from neagari.search.schemas import ProbeTokenIssues

    pieces = PublishedPieces()
    assert pieces.pieces[220] == " "
    for domain in PUBLISHED:
        probes = load_probes(published_file(domain))
        report = token_report(probes, pieces, domain)
        ProbeTokenIssues.validate(report)
        hand = {p.name for p in probes if p.correct_id == 220 and re.fullmatch(r" \d+", p.correct)}
        assert set(report["name"]) == hand, domain
        assert report["correct_whitespace"].all() and not report["same_first_token"].any()
    math = token_report(load_probes(published_file("math")), pieces, "math")
    assert math.height == 50 and ("gsm_sub_0052", " 250", 220) in math.select("name", "correct", "correct_id").rows()
    assert {"mbpp_260_1", "he_HumanEval_131_3"} == set(token_report(load_probes(published_file("coding")), pieces,
                                                                     "coding")["name"])


UPSTREAM_BASE = [  # upstream src/xor_search.py DEFAULT_CONTROL_PROBES, as neagari.evaluation.datasets tags them
    {"prompt": "The capital of France is", "correct": " Paris", "wrong": " London", "name": "geo_france"},
    {"prompt": "2 + 2 =", "correct": " 4", "wrong": " 5", "name": "math_basic"},
    {"prompt": "The color of the sky is", "correct": " blue", "wrong": " red", "name": "knowledge"},
]


def upstream_base_doc(*targets) -> dict:
    from neagari.search.calibrate import UPSTREAM_BASE_SOURCE

    controls = [dict(p, category="base", source=UPSTREAM_BASE_SOURCE) for p in UPSTREAM_BASE]
    return {"probes": {"target": list(targets), "control": controls}}


GSM = {"name": "gsm", "prompt": "Tom had 300 apples and gave away 50. How many are left? Answer:", "correct": " 250",
       "wrong": " -"}


def test_token_report_finds_math_basic(engine):
    """' 4' and ' 5' share their first token under the Qwen split (a bare space, 220, as the fixture
    tokenizer's bytes): upstream's math_basic has gap 0 whatever the weights, as every published
    record shows (its gap is 0.0 in every flip, the only such control)."""
    from neagari.search.calibrate import token_report

    records = upstream_json("patch_controls.json")
    assert all(r["zero_gap_controls"] == ["math_basic"] for r in records.values())
    probes = [probe_from_dict(d, "control", d["name"]) for d in UPSTREAM_BASE]
    report = token_report(probes, engine.tokenizer, "base_controls")
    assert report.select("name", "correct_id", "wrong_id", "same_first_token").rows() == \
        [("math_basic", 220, 220, True)]
    assert report["correct_whitespace"].all() and report["wrong_whitespace"].all() and not report["ids_stored"].any()


def test_calibration_keeps_upstream_base_controls(engine):
    """By default, as upstream: its base controls are not calibrated (no stored ids, wrong text as
    written, math_basic's gap exactly 0) and answers are scored at their first token (' 250' at 220)."""
    doc = calibrate_document(engine, upstream_base_doc(GSM))
    ctrl = {d["name"]: d for d in doc["probes"]["control"]}
    assert [ctrl[p["name"]]["wrong"] for p in UPSTREAM_BASE] == [" London", " 5", " red"]
    assert not any("base_correct_id" in d or "heuristic_wrong" in d for d in ctrl.values())
    assert ctrl["math_basic"]["base_gap"] == 0.0
    assert doc["_calibration"]["kept_uncalibrated"] == ["geo_france", "math_basic", "knowledge"]
    gsm = doc["probes"]["target"][0]
    assert gsm["base_correct_id"] == engine.tokenizer.encode(" 250")[0] == 220
    scored = score_probes(engine, [probe_from_dict(d, "control", d["name"]) for d in doc["probes"]["control"]])
    assert dict(zip(scored["name"], scored["gap"]))["math_basic"] == 0.0
    # calibrate: the rival replaces the heuristic wrong token of the base controls too
    cal = calibrate_document(engine, upstream_base_doc(GSM), upstream_controls="calibrate")
    basic = next(d for d in cal["probes"]["control"] if d["name"] == "math_basic")
    assert basic["heuristic_wrong"] == " 5" and basic["base_correct_id"] == 220 != basic["base_wrong_id"]


def test_corrected_probe_set_compares_the_first_differing_token(engine):
    from neagari.search.calibrate import token_report

    tok = engine.tokenizer
    doc = calibrate_document(engine, upstream_base_doc(GSM), first_token="differing")
    basic = next(d for d in doc["probes"]["control"] if d["name"] == "math_basic")
    assert (basic["prompt"], basic["correct"], basic["wrong"]) == ("2 + 2 = ", "4", "5")
    assert basic["uncorrected"] == {"prompt": "2 + 2 =", "correct": " 4", "wrong": " 5"}
    assert basic["base_gap"] != 0.0  # '4' against '5' now
    gsm = doc["probes"]["target"][0]
    assert (gsm["prompt"], gsm["correct"]) == (GSM["prompt"] + " ", "250")
    assert gsm["base_correct_id"] == tok.encode("2")[0] == tok.encode(" 250")[1]
    assert tok.encode(gsm["prompt"]) == tok.encode(GSM["prompt"]) + [220]
    assert doc["_calibration"]["moved_to_prompt"] == 2  # ' Paris'/' London', ' blue'/' red' differ at once
    probes = [probe_from_dict(d, r, d["name"]) for r, g in doc["probes"].items() for d in g]
    assert token_report(probes, tok, "t").height == 0
    # recalibration starts from the texts as written: the same document again
    again = calibrate_document(engine, doc, first_token="differing")
    assert again["probes"] == doc["probes"]
    assert calibrate_document(engine, doc)["probes"] == calibrate_document(engine, upstream_base_doc(GSM))["probes"]


def test_answer_prefix_probes_are_scored_as_the_notebook_checks_them(engine):
    """A notebook knowledge control passes when the top token's stripped text and its expected
    prefix are prefixes one of the other. Read off the fixture model's ranking by hand: a prefix of
    the top token's text makes the top token correct (gap > 0) although the prefix's own first
    token is another one; a prefix no top-ranked token shares makes the top token the rival."""
    tok = engine.tokenizer
    prompt = "The capital of France is"
    row = engine.logits([tok.encode(prompt)])[0].float()
    ranked = row.argsort(descending=True).tolist()
    texts = [tok.decode([i]).strip() for i in ranked]
    top = next(k for k, t in enumerate(texts) if len(t) >= 2)  # the best token with 2+ characters
    prefix = texts[top][:2]
    first_ok = next(k for k, t in enumerate(texts) if t.startswith(prefix) or prefix.startswith(t))
    first_other = next(k for k, t in enumerate(texts) if not (t.startswith(prefix) or prefix.startswith(t)))
    probe = {"name": "k", "prompt": prompt, "correct": " " + prefix, "wrong": "\n", "answer_prefix": prefix,
             "category": "knowledge"}
    doc = calibrate_document(engine, {"probes": {"control": [probe]}})
    got = doc["probes"]["control"][0]
    assert (got["base_correct_id"], got["base_wrong_id"]) == (ranked[first_ok], ranked[first_other])
    assert (got["base_gap"] > 0) == (first_ok < first_other)
    assert got["base_gap"] == pytest.approx(float(row[ranked[first_ok]] - row[ranked[first_other]]), abs=1e-4)
    assert doc["_calibration"]["scored_by_answer_prefix"] == ["k"]
    # the same probe without its prefix is scored at the first token of its text
    plain = calibrate_document(engine, {"probes": {"control": [{k: v for k, v in probe.items()
                                                                 if k != "answer_prefix"}]}})
    assert plain["probes"]["control"][0]["base_correct_id"] == tok.encode(" " + prefix)[0]
    assert plain["_calibration"]["scored_by_answer_prefix"] == []
