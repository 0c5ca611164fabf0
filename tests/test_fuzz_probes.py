"""Fuzzing the probe-file boundary: generated probe documents (random keys, values and types, ids
as floats, strings, bools, negative or huge numbers, empty, long, unicode or surrogate prompts,
correct == wrong, nested structures, extra keys) and byte-level mutations of
resources/probes/smoke.json, each scored through the command line in-process
(``neagari score`` on a fixture model).

Every case must end in one of two ways: exit 0 with a table of one row per probe whose gaps are
correct_logit - wrong_logit and whose token ids are the stored or first-token ones, or exit 2 with
the error as the last stderr line (``neagari: error: ...`` naming the file; any line before it is
the run's own log). Never a traceback (an exception escaping ``main``), never a hang (a per-case
alarm), never a changed probe file. An independent reference (``reference`` below: valid types,
required keys, distinct answers, the model's vocabulary and context) decides from the document
which of the two must happen, so a file accepted that should be refused fails as well.

Profiles: the default keeps this module to a few seconds (``make test``). A longer run by hand:

    NEAGARI_FUZZ_EXAMPLES=1000 pytest -q -s -p no:cacheprovider tests/test_fuzz_probes.py
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing
from neagari.engine.engine import Engine

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "resources" / "probes" / "smoke.json"
MODEL = "tied_gqa"  # vocabulary 512, context length 512 (tests/conftest.py)
LONG = int(os.environ.get("NEAGARI_FUZZ_EXAMPLES", "0"))
CASE_TIMEOUT_S = 30
_found: dict[str, int] = {}  # case kind and outcome → count
_errors: dict[str, int] = {}  # the first words of each error message → count


def examples(default: int) -> settings:
    return settings(max_examples=LONG or default, deadline=None, derandomize=not LONG, database=None,
                    suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------------------- the reference

ACCEPT, REFUSE = "accept", "refuse"
_IDS = ("base_correct_id", "base_wrong_id")


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _int(x) -> bool:
    return type(x) is int


@dataclass
class Model:
    """What the reference needs from the model: its tokenizer, vocabulary and context."""

    tok: object
    vocab: int
    ctx: int


def expected_rows(doc, model: Model) -> list[dict] | None:
    """The rows ``neagari score`` must write for the parsed document ``doc`` (name, role, token ids,
    prompt length), or None when the file must be refused."""
    if not isinstance(doc, dict) or "probes" not in doc:
        return None
    groups = doc["probes"]
    if isinstance(groups, list):
        groups = {"target": groups}
    elif not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
        return None
    if not all(_utf8(k) for k in doc) or not all(_utf8(r) for r in groups):
        return None  # a key that is not Unicode text (a lone surrogate), of the document or a group
    rows = []
    for role, items in groups.items():
        for i, d in enumerate(items):
            if not isinstance(d, dict):
                return None
            if any(not isinstance(d.get(k), str) for k in ("prompt", "correct", "wrong")):
                return None  # missing or not a string
            if "name" in d and not isinstance(d["name"], str):
                return None
            if any(k in d and d[k] is not None and not (_int(d[k]) and d[k] >= 0) for k in _IDS):
                return None
            gap = d.get("base_gap")
            if gap is not None and not (_int(gap) or type(gap) is float):
                return None
            if not all(_utf8(d[k]) for k in ("name", "prompt", "correct", "wrong") if k in d):
                return None
            if not all(_utf8(k) for k in d):  # extra keys are carried unvalidated, but must be text
                return None
            c, w = d.get("base_correct_id"), d.get("base_wrong_id")
            if c is not None and c == w:
                return None
            if d["correct"] == d["wrong"] and (c is None or w is None):
                return None
            shown = repr(role) if len(repr(role)) <= 60 else repr(role)[:57] + "..."
            where = f"{'probes.' + role if role.isidentifier() else 'probes[' + shown + ']'}[{i}]"
            rows.append({"name": d.get("name"), "where": where, "role": role, "prompt": d["prompt"],
                         "correct": d["correct"], "wrong": d["wrong"], "c": c, "w": w})
    if not rows:
        return None
    for r in rows:  # the checks that need the model
        ids = model.tok.encode(r.pop("prompt"))
        if not ids or len(ids) + 1 > model.ctx:
            return None
        stored = r["c"] is not None or r["w"] is not None
        for key, text in (("c", "correct"), ("w", "wrong")):
            if r[key] is None:
                first = model.tok.encode(r[text])
                if not first:
                    return None
                r[key] = first[0]
            if r[key] >= model.vocab:
                return None
        if stored and r["c"] == r["w"]:
            return None
        r["n_prompt_tokens"] = len(ids)
    return rows


def reference(raw: bytes, model: Model) -> list[dict] | None:
    """``expected_rows`` of a file's bytes (None: refused, including bytes that are not a JSON text)."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return expected_rows(doc, model)


# ---------------------------------------------------------------------------- running a case


def run_cli(argv: list[str]) -> tuple[int, str]:
    """main(argv) in-process: (exit status, stderr) (tests/fuzzing.py)."""
    rc, _, err = fuzzing.run_cli(argv, CASE_TIMEOUT_S)
    return rc, err


@dataclass
class Base:
    model_path: Path
    model: Model
    work: Path


@pytest.fixture(scope="module")
def base(fixture_models, tmp_path_factory) -> Base:
    path = fixture_models[MODEL]
    eng = Engine.load(path)
    return Base(path, Model(eng.tokenizer, eng.cfg.vocab_size, eng.cfg.context_length),
                tmp_path_factory.mktemp("fuzz-probes"))


def _log_line(line: str) -> bool:
    """A line of the run's own log: timestamped, or a probe warning (logging's last-resort handler
    prints the message alone)."""
    return line[:4].isdigit() or "its gap is 0 until calibration" in line


def check_case(base: Base, raw: bytes, kind: str) -> str:
    """Score the probe file ``raw``; assert the contract and the reference's verdict; return the outcome."""
    path = base.work / "probes.json"
    path.write_bytes(raw)
    out = base.work / "scores.parquet"
    out.unlink(missing_ok=True)
    rc, err = run_cli(["score", str(base.model_path), "--probes", str(path), "--out", str(out)])
    assert path.read_bytes() == raw, "the probe file was changed"
    assert "Traceback" not in err, err
    want = reference(raw, base.model)
    lines = [line for line in err.splitlines() if line.strip()]
    if rc == 2:
        assert lines and lines[-1].startswith("neagari: error: "), err
        assert path.name in lines[-1], f"the error does not name the file: {lines[-1]}"
        assert all(_log_line(line) for line in lines[:-1]), err
        assert not out.exists(), "a refused file left a table"
        assert want is None, f"refused a file the reference accepts: {lines[-1]}"
        msg = lines[-1].split(": ", 2)[-1]
        msg = msg.split("): ", 1)[-1] if "(name " in msg else msg
        words = " ".join(w for w in msg.split()[:4] if not any(c.isdigit() or c in "'\"[" for c in w))
        _errors[words] = _errors.get(words, 0) + 1
        outcome = "refused"
    else:
        assert rc == 0, (rc, err)
        assert want is not None, "scored a file the reference refuses"
        assert lines and lines[-1].startswith(f"scored {len(want)} probes"), err
        assert all(_log_line(line) for line in lines[:-1]), err
        df = pl.read_parquet(out)
        assert df.height == len(want), f"{df.height} rows for {len(want)} probes"
        names = [r["name"] if r["name"] is not None else f"probes.json:{r['where']}" for r in want]
        assert df["name"].to_list() == names
        assert df["role"].to_list() == [r["role"] for r in want]
        assert df["correct_id"].to_list() == [r["c"] for r in want]
        assert df["wrong_id"].to_list() == [r["w"] for r in want]
        assert df["n_prompt_tokens"].to_list() == [r["n_prompt_tokens"] for r in want]
        for c, w, g in zip(df["correct_logit"], df["wrong_logit"], df["gap"]):
            assert math.isfinite(g) and abs((c - w) - g) <= 1e-5 * max(1.0, abs(c), abs(w)), (c, w, g)
        outcome = "scored"
    _found[f"{kind} {outcome}"] = _found.get(f"{kind} {outcome}", 0) + 1
    return outcome


def _dump(doc, ascii_only: bool = True) -> bytes:
    text = json.dumps(doc, ensure_ascii=ascii_only)  # ascii: lone surrogates become \\ud800 escapes
    return text.encode("utf-8")


# ---------------------------------------------------------------------------- the reference itself

def test_smoke_file_scores(base):
    assert check_case(base, SMOKE.read_bytes(), "smoke") == "scored"


@pytest.mark.parametrize("edit,outcome", [
    (lambda d: None, "scored"),
    (lambda d: d["probes"]["target"][0].update(wrong=" Paris"), "refused"),
    (lambda d: d["probes"]["target"][1].update(base_correct_id=True), "refused"),
    (lambda d: d["probes"]["target"][1].update(base_correct_id=5.0), "refused"),
    (lambda d: d["probes"]["target"][1].update(base_correct_id=7, base_wrong_id=9), "scored"),
    (lambda d: d["probes"]["target"][1].update(base_correct_id=7, base_wrong_id=512), "refused"),
    (lambda d: d["probes"]["target"][2].update(prompt=""), "refused"),
    (lambda d: d["probes"]["target"][2].update(prompt="word " * 200), "refused"),
    (lambda d: d["probes"]["target"][2].update(correct=""), "refused"),
    (lambda d: d["probes"]["target"][2].update(correct="", base_correct_id=3), "scored"),
    (lambda d: d["probes"]["target"][2].update(name="a\ud800"), "refused"),
    (lambda d: d["probes"]["target"][2].pop("name"), "scored"),
    (lambda d: d["probes"].update(x=[]), "scored"),
    (lambda d: d["probes"].update({"\ud800": []}), "refused"),
    (lambda d: d.update({"\ud800x": 1}), "refused"),  # was a StopIteration traceback
    (lambda d: d["probes"]["target"][2].update({"\ud8ca": "smoke"}), "refused"),
    (lambda d: d["probes"]["target"][2].update(category="\ud800", extra={"\ud800": 1}), "scored"),
    (lambda d: d["probes"]["target"][3].update(base_gap=float("nan"), extra={"a": [[[]]]}), "scored"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_reference_on_known_documents(base, edit, outcome):
    doc = json.loads(SMOKE.read_text())
    edit(doc)
    assert check_case(base, _dump(doc), "known") == outcome


# ---------------------------------------------------------------------------- strategies

SPECIAL_IDS = [0, 1, 5, 255, 511, 512, 513, -1, -(2**63), 2**31, 2**63 - 1, 2**63, 2**64, 10**30, 5.0, 5.7, -0.0,
               float("inf"), float("nan"), "5", "", True, False, None, [5], {"id": 5}]
texts = st.one_of(
    st.sampled_from([" Paris", " Rome", "Paris", "", " ", "\n", "a\ud800", "\udfff", "é", "日本", "🙂", "\u2028",
                     "<|im_start|>", "\x00", " 5", " 6", "word " * 200]),
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    st.text(alphabet="ab ", min_size=1, max_size=8),
)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                      st.text(max_size=10), st.sampled_from(["\n", "\ud800", "target", "probes"]))
json_value = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                         st.dictionaries(st.text(max_size=6), c, max_size=3)),
                          max_leaves=10)
bad_value = st.one_of(json_value, st.sampled_from(SPECIAL_IDS))
ids = st.one_of(st.integers(0, 600), st.sampled_from(SPECIAL_IDS), st.integers(-5, 2**70))


good_texts = st.one_of(st.sampled_from([" Paris", " Rome", "Paris", " 5", " 6", "é", "日本", "🙂", "a b"]),
                       st.text(alphabet="abc xyz", min_size=1, max_size=8))


@st.composite
def probe_record(draw):
    """A probe: most of them well-formed; the others with fields dropped, replaced by other types,
    odd texts, ids or extra keys."""
    if draw(st.integers(0, 9)) < 7:
        d = {"name": draw(st.text(alphabet="abc_1", max_size=6)), "prompt": draw(good_texts),
             "correct": draw(good_texts), "wrong": draw(good_texts)}
        if draw(st.booleans()):
            d["base_correct_id"], d["base_wrong_id"] = draw(st.lists(st.integers(0, 511), min_size=2, max_size=2,
                                                                     unique=True))
        return d
    if draw(st.integers(0, 9)) == 0:
        return draw(bad_value)  # not an object
    d = {"name": draw(st.one_of(st.text(max_size=10), st.sampled_from(["geo", "a b", "\ud800", "x" * 80]))),
         "prompt": draw(texts), "correct": draw(texts), "wrong": draw(texts)}
    if draw(st.integers(0, 3)) == 0:
        d["wrong"] = d["correct"]
    for key in _IDS:
        if draw(st.booleans()):
            d[key] = draw(ids)
    if draw(st.integers(0, 3)) == 0:
        d["base_gap"] = draw(st.one_of(st.floats(allow_nan=True), st.integers(-10, 10), bad_value))
    for _ in range(draw(st.integers(0, 2))):  # extra keys, or a known key spelled otherwise
        d[draw(st.one_of(st.text(max_size=8), st.sampled_from(["category", "Prompt", "name ", "base_correct_ID", "\ud8ca"])))] = \
            draw(json_value)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # a field dropped or of another type
        key = draw(st.sampled_from(["name", "prompt", "correct", "wrong", *_IDS, "base_gap"]))
        if draw(st.booleans()):
            d.pop(key, None)
        else:
            d[key] = draw(bad_value)
    return d


@st.composite
def probe_document(draw):
    how = draw(st.sampled_from(["groups"] * 6 + ["list"] * 3 + ["top"]))
    if how == "top":  # a top level that is not a probe document
        return draw(st.one_of(json_value, st.just({"domain": "x"}),
                              st.builds(lambda v: {"probes": v}, bad_value)))
    probes = st.lists(probe_record(), min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=3)
    if how == "list":
        doc = {"probes": draw(probes)}
    else:
        roles = st.one_of(st.sampled_from(["target", "promoted_controls", "control", "a b", "", "\ud800", "1"]),
                          st.text(max_size=6))
        group = st.integers(0, 9).flatmap(lambda k: bad_value if k == 0 else probes)  # rarely not a list
        groups = draw(st.dictionaries(roles, group, min_size=draw(st.sampled_from([0, 1, 1])), max_size=3))
        doc = {"domain": "fuzz", "probes": groups}
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["version", "source", "_calibration", "search_config", "\udc00"]))] = \
            draw(json_value)
    return doc


@st.composite
def byte_mutation(draw, raw: bytes) -> bytes:
    """Raw edits of a valid probe file: truncate, flip, splice, insert, delete, nest."""
    how = draw(st.sampled_from(["truncate", "flip", "flip", "splice", "insert", "delete", "nest", "duplicate"]))
    at = draw(st.integers(0, len(raw) - 1))
    if how == "truncate":
        return raw[:at]
    if how == "flip":
        b = bytearray(raw)
        for _ in range(draw(st.integers(1, 3))):
            b[draw(st.integers(0, len(b) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    if how == "splice":  # a run of the file copied over another place
        src = draw(st.integers(0, len(raw) - 1))
        n = draw(st.integers(1, 80))
        return raw[:at] + raw[src:src + n] + raw[at + n:]
    if how == "insert":
        return raw[:at] + draw(st.one_of(st.binary(min_size=1, max_size=8),
                                         st.sampled_from([b",", b"{", b"[", b"]", b"}", b'"', b"\\", b"null",
                                                          b"\\ud800", b"\xff", b"\xc3", b"1e999", b"NaN"]))) + raw[at:]
    if how == "delete":
        return raw[:at] + raw[at + draw(st.integers(1, 16)):]
    if how == "nest":  # a value wrapped in many brackets (deep enough to exhaust a recursive parser)
        depth = draw(st.sampled_from([1, 10, 900, 5000, 100_000]))
        starts = [i for i, c in enumerate(raw) if c in b'"[{']
        i = draw(st.sampled_from(starts))
        doc = raw[:i] + b"[" * depth + raw[i:]
        j = doc.find(b",", i + depth)
        return doc[:j] + b"]" * depth + doc[j:] if j > 0 else doc
    # duplicate: a probe object repeated (the same name twice)
    i = raw.index(b"{", raw.index(b'"target"'))
    j = raw.index(b"}", i) + 1
    return raw[:j] + b"," + raw[i:j] + raw[j:]


# ---------------------------------------------------------------------------- properties

@given(doc=probe_document(), ascii_only=st.booleans())
@examples(50)
def test_fuzz_generated_documents(base, doc, ascii_only):
    try:
        raw = _dump(doc, ascii_only)
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form: write it as an escape
        raw = _dump(doc, True)
    check_case(base, raw, "generated")


@given(data=st.data())
@examples(30)
def test_fuzz_mutated_smoke_file(base, data):
    check_case(base, data.draw(byte_mutation(SMOKE.read_bytes())), "mutated")


def test_fuzz_report():
    """Prints what the properties saw (run with -s): case kind and outcome → count."""
    for k, v in sorted(_found.items()):
        print(f"{v:6d}  {k}")
    for k, v in sorted(_errors.items(), key=lambda kv: -kv[1]):
        print(f"{v:6d}  error: {k}")
