"""Fuzzing `neagari apply-patch` with generated and mutated patch files (both formats).

Every case must end in one of two ways: exit 0 with exactly the bytes an independent reference
computes from the document (and, where the document allows it, applying it again restores the
base), or exit 2 with exactly one line on stderr. Never a traceback, a hang, a changed base file
or a temporary file left next to the output. The reference below decides from the document alone
which of the two must happen, so a patch accepted that should be refused fails as well.

The default profile runs a few hundred cases (seconds). A longer run by hand:

    NEAGARI_FUZZ_EXAMPLES=5000 pytest -q -p no:cacheprovider tests/test_fuzz_patch.py

(``NEAGARI_FUZZ_SEED`` picks another derandomized stream; unset, the default profile is
derandomized, so ``make test`` is reproducible.)
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from neagari.cli import main
from neagari.engine import q1
from neagari.engine.gguf_io import TYPE_F32, GGUFFile, write_gguf

REPO = Path(__file__).resolve().parents[1]
UP, DOWN, NORM = "blk.0.ffn_up.weight", "blk.1.ffn_down.weight", "blk.0.attn_norm.weight"
N_GROUPS = {UP: 64 * 256 // 128, DOWN: 32 * 512 // 128}
CASE_TIMEOUT_S = 20

_examples = int(os.environ.get("NEAGARI_FUZZ_EXAMPLES", "0"))
settings.register_profile(
    "neagari-fuzz", max_examples=_examples or 120, deadline=None, database=None,
    derandomize=_examples == 0 and "NEAGARI_FUZZ_SEED" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                         HealthCheck.function_scoped_fixture],
)
FUZZ = settings.get_profile("neagari-fuzz")


# ---------------------------------------------------------------------------- the base file

@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    rng = np.random.default_rng(11)
    up = rng.normal(size=(64, 256)).astype(np.float32) * np.geomspace(0.01, 10, 64, dtype=np.float32)[:, None]
    down = rng.normal(size=(32, 512)).astype(np.float32)
    tensors = [(UP, q1.quantize(up), q1.GGML_TYPE_Q1_0), (DOWN, q1.quantize(down), q1.GGML_TYPE_Q1_0),
               (NORM, np.ones(256, dtype=np.float32), TYPE_F32)]
    root = tmp_path_factory.mktemp("fuzz")
    return write_gguf(root / "base.gguf", "qwen3", lambda w: w.add_uint32("qwen3.block_count", 2), tensors)


class Layout(dict):
    """The base file's bytes, sha256, tensor offsets and Q1_0 tensors; shown briefly in reports."""

    def __repr__(self):
        return f"Layout(sha256={self['sha'][:12]}...)"


@pytest.fixture(scope="module")
def layout(base) -> Layout:
    g = GGUFFile(base)
    return Layout(bytes=base.read_bytes(), sha=hashlib.sha256(base.read_bytes()).hexdigest(),
                  offsets={n: r.offset for n, r in g.tensors.items()},
                  q1={n for n, r in g.tensors.items() if r.ggml_type == q1.GGML_TYPE_Q1_0})


# ---------------------------------------------------------------------------- the reference

class Refused(Exception):
    pass


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _sha(doc, key):
    v = doc.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not _HEX64.fullmatch(v):
        raise Refused(key)
    return v.lower()


def reference(doc, layout: dict, force: bool) -> bytes:
    """The bytes apply-patch must write for ``doc`` (a decoded JSON value), or Refused."""
    if not isinstance(doc, dict):
        raise Refused("not an object")
    fmt = doc.get("format")
    if fmt == "neagari-patch":
        if not _int(doc.get("format_version")) or doc["format_version"] != 1:
            raise Refused("format_version")
        if doc.get("metadata") is not None and not isinstance(doc["metadata"], dict):
            raise Refused("metadata")
    elif fmt in ("bankai_group_xor_v2", "neagari_xor_v2"):
        if "version" in doc and not (_int(doc["version"]) and doc["version"] == 2):
            raise Refused("version")
    else:
        raise Refused("format")
    flips = doc.get("flips")
    if not isinstance(flips, list):
        raise Refused("flips")
    buf = np.frombuffer(layout["bytes"], dtype=np.uint8).copy()
    for rec in flips:
        if not isinstance(rec, dict):
            raise Refused("flip")
        layer, proj, group, typ = rec.get("layer"), rec.get("proj"), rec.get("group"), rec.get("type", "group")
        if not _int(layer) or layer < 0 or not isinstance(proj, str) or not proj or not _int(group) or group < 0:
            raise Refused("flip fields")
        if not isinstance(typ, str) or typ not in ("group", "scale"):
            raise Refused("type")
        bit = rec.get("bit")
        if typ == "scale" and (not _int(bit) or not 0 <= bit < 16):
            raise Refused("bit")
        name = f"blk.{layer}.{proj}"
        if name not in layout["q1"] or group >= N_GROUPS[name]:
            raise Refused("address")
        if typ == "scale" and bit not in q1.SCALE_BITS:
            raise Refused("scale bit")
        start = layout["offsets"][name] + group * 18
        if typ == "group":
            buf[start + 2 : start + 18] ^= 0xFF
        else:
            buf[start + bit // 8] ^= 1 << (bit % 8)
    if not isinstance(doc.get("fitness_history", []), list):
        raise Refused("fitness_history")
    for key in ("search_config", "created_by"):
        if key in doc and not isinstance(doc[key], dict):
            raise Refused(key)
    base_sha, patched_sha = _sha(doc, "base_sha256"), _sha(doc, "patched_sha256")
    if fmt == "neagari-patch" and base_sha is None:
        raise Refused("base_sha256 missing")
    result = buf.tobytes()
    digest = hashlib.sha256(result).hexdigest()
    if base_sha is None:
        if not force:
            raise Refused("needs force")
        expect = None
    elif base_sha == layout["sha"]:
        expect = patched_sha
    elif patched_sha == layout["sha"]:
        expect = base_sha
    else:
        raise Refused("other base")
    if expect is not None and digest != expect:
        raise Refused("recorded result differs")
    return result


# ---------------------------------------------------------------------------- running a case

@contextlib.contextmanager
def _time_limit(seconds: int):
    def on_alarm(*_):
        raise TimeoutError(f"case ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with _time_limit(CASE_TIMEOUT_S), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)  # an exception escaping here is a finding: pytest shows its traceback
    return rc, err.getvalue()


_case = iter(range(10**9))


def check_case(text: bytes, base: Path, layout: dict, force: bool, workdir: Path, keep: bool = False) -> str:
    """Apply ``text`` as a patch file; assert the contract; return "ok" or "refused".

    The case's folder is removed afterwards unless ``keep`` (or an assertion failed)."""
    case = workdir / f"case{next(_case)}"
    case.mkdir(parents=True)
    check_case.last = case
    patch, out = case / "patch.json", case / "out.gguf"
    patch.write_bytes(text)
    rc, err = _run_cli(["apply-patch", "--base", str(base), "--out", str(out), *(["--force"] if force else []),
                        str(patch)])
    assert base.read_bytes() == layout["bytes"], "the base file changed"
    leftovers = sorted(p.name for p in case.iterdir() if p.name not in ("patch.json", "out.gguf"))
    assert not leftovers, f"files left next to the output: {leftovers}"
    try:
        doc = json.loads(text)
        want = reference(doc, layout, force)
    except (ValueError, RecursionError, Refused):
        want = None
    if rc == 2:
        assert err.startswith("neagari: error: ") and err.count("\n") == 1 and err.endswith("\n"), repr(err)
        assert "Traceback" not in err and not out.exists()
        assert want is None, f"refused a patch the reference accepts: {err.strip()}"
        keep or shutil.rmtree(case)
        return "refused"
    assert rc == 0, (rc, err)
    assert want is not None, "applied a patch the reference refuses"
    assert out.read_bytes() == want, "wrong bytes written"
    # self-inverse: the written file, patched again with the same moves, is the base
    undo = dict(doc, format="neagari_xor_v2", version=2, flips=doc["flips"])
    for k in ("base_sha256", "patched_sha256", "format_version", "metadata"):
        undo.pop(k, None)
    (case / "undo.json").write_text(json.dumps(undo))
    rc2, err2 = _run_cli(["apply-patch", "--base", str(out), "--out", str(case / "back.gguf"), "--force",
                          str(case / "undo.json")])
    assert rc2 == 0, err2
    assert (case / "back.gguf").read_bytes() == layout["bytes"], "applying twice does not restore the base"
    keep or shutil.rmtree(case)
    return "ok"


# ---------------------------------------------------------------------------- strategies

PROJS = ["ffn_up.weight", "ffn_down.weight", "attn_norm.weight", "ffn_gate.weight", "", "ffn_up.weight\n",
         "ffn_up.weight ", "../ffn_up.weight", "FFN_UP.weight", "ffn_up.weight\x00", "ffn_up"]


@st.composite
def flips(draw):
    if draw(st.integers(0, 9)) < 8:  # mostly a valid move, so that whole patches often apply
        name = draw(st.sampled_from(sorted(N_GROUPS)))
        rec = {"layer": int(name[4]), "proj": name[6:], "group": draw(st.integers(0, N_GROUPS[name] - 1))}
        if draw(st.booleans()):
            rec.update(type="scale", bit=draw(st.sampled_from(q1.SCALE_BITS)))
        elif draw(st.booleans()):
            rec["type"] = "group"
        return rec
    layer = draw(st.sampled_from([0, 0, 1, 1, 2, -1, 10**6]))
    proj = draw(st.sampled_from(PROJS[:2] * 4 + PROJS))
    group = draw(st.one_of(st.integers(0, 127), st.sampled_from([128, -1, 2**63, 10**30])))
    typ = draw(st.sampled_from(["group", "group", "scale", "scale", None]))
    rec = {"layer": layer, "proj": proj, "group": group}
    if typ is not None:
        rec["type"] = typ
    if typ == "scale" or draw(st.booleans()):
        rec["bit"] = draw(st.one_of(st.integers(0, 9), st.integers(-3, 20)))
    if draw(st.booleans()):  # upstream records carry search fields; they are kept verbatim
        rec.update(iteration=draw(st.integers(0, 10**6)), fitness_before=0.0, fitness_after=draw(st.floats()),
                   target_gaps_before=[["p", -1.5], ["p", -1.5]])
    return rec


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                      st.text(max_size=20), st.sampled_from(["\n", "0" * 64, "F" * 64, "\u2028", "group", "scale"]))
json_value = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), c, max_size=4)),
                          max_leaves=12)


def _flip_hex(s: str, i: int) -> str:
    c = s[i % len(s)]
    return s[: i % len(s)] + ("0" if c != "0" else "1") + s[i % len(s) + 1 :]


def sha_variants(good: str):
    return st.one_of(
        st.just(good), st.just(good.upper()), st.just(good + "\n"), st.just(" " + good), st.just(good[:63]),
        st.just(good + "0"), st.integers(0, 63).map(lambda i: _flip_hex(good, i)), st.just("0" * 64),
        st.just(None), json_value)


@st.composite
def documents(draw, layout):
    """A patch document: mostly valid, in either format, often with one field mutated."""
    moves = draw(st.lists(flips(), max_size=8))
    sha = layout["sha"]
    fmt = draw(st.sampled_from(["neagari-patch", "neagari_xor_v2", "bankai_group_xor_v2"]))
    if fmt == "neagari-patch":
        doc = {"format": fmt, "format_version": 1, "base_sha256": sha, "search_config": {},
               "created_by": {"tool": "neagari", "version": None}}
    else:
        doc = {"version": 2, "format": fmt, "base_model": "x", "domain": "math", "iterations": 5}
        if draw(st.booleans()):
            doc["base_sha256"] = sha
    doc["flips"] = moves
    doc["fitness_history"] = [0.0] * len(moves)
    if draw(st.booleans()):  # the true patched hash, when the moves are valid
        try:
            doc["patched_sha256"] = hashlib.sha256(reference(dict(doc, base_sha256=None), layout, True)).hexdigest()
        except Refused:
            pass
    if draw(st.integers(0, 3)) == 0:  # swap direction: a patch recorded from the patched side
        if "patched_sha256" in doc and "base_sha256" in doc:
            doc["base_sha256"], doc["patched_sha256"] = doc["patched_sha256"], doc["base_sha256"]
    for _ in range(draw(st.integers(0, 2))):
        doc = draw(mutate(doc, layout))
    return doc


TOP_KEYS = ["format", "format_version", "version", "flips", "fitness_history", "base_sha256", "patched_sha256",
            "search_config", "created_by", "metadata", "n_flips", "domain"]
FLIP_KEYS = ["layer", "proj", "group", "type", "bit"]


@st.composite
def mutate(draw, doc, layout):
    if not isinstance(doc, dict):  # already wrapped in something else
        return doc
    doc = copy.deepcopy(doc)
    op = draw(st.sampled_from(["set", "delete", "flip_set", "flip_delete", "sha", "wrap", "format"]))
    if op == "set":
        doc[draw(st.sampled_from(TOP_KEYS))] = draw(json_value)
    elif op == "delete":
        doc.pop(draw(st.sampled_from(TOP_KEYS)), None)
    elif op in ("flip_set", "flip_delete") and isinstance(doc.get("flips"), list) and doc["flips"]:
        i = draw(st.integers(0, len(doc["flips"]) - 1))
        if not isinstance(doc["flips"][i], dict):
            return doc
        key = draw(st.sampled_from(FLIP_KEYS))
        if op == "flip_delete":
            doc["flips"][i].pop(key, None)
        else:
            doc["flips"][i][key] = draw(st.one_of(json_value, st.sampled_from(
                [True, False, 1.0, 0.5, "1", [1], {"a": 1}, float("nan"), float("inf"), -0.0, 2**64])))
    elif op == "sha":
        key = draw(st.sampled_from(["base_sha256", "patched_sha256"]))
        doc[key] = draw(sha_variants(doc.get(key) if isinstance(doc.get(key), str) and doc.get(key) else layout["sha"]))
    elif op == "wrap":
        doc = draw(st.sampled_from([[doc], {"patch": doc}, {"flips": [doc]}, dict(doc, flips=[doc.get("flips")])]))
    elif op == "format":
        doc["format"] = draw(st.sampled_from(["neagari-patch", "neagari_xor_v2", "bankai_group_xor_v2",
                                              "bankai_group_xor_v1", "NEAGARI-PATCH", "", None, 2]))
        doc["format_version"] = draw(st.sampled_from([1, 1, 2, 0, True, 1.0, "1", None]))
        if draw(st.booleans()):
            doc["version"] = draw(st.sampled_from([2, 2, 1, 3, 2.0, True, "2", None]))
    return doc


def encode(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


@st.composite
def texts(draw, layout):
    """Byte-level damage to a valid document: truncation, insertion, deep nesting, odd encodings."""
    raw = encode(draw(documents(layout)))
    op = draw(st.sampled_from(["truncate", "insert", "deep", "encoding", "bigint", "empty", "dup"]))
    if op == "truncate":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if op == "insert":
        i = draw(st.integers(0, len(raw)))
        return raw[:i] + draw(st.binary(min_size=1, max_size=8)) + raw[i:]
    if op == "deep":
        n = draw(st.sampled_from([10, 500, 5000, 100_000]))
        where = draw(st.sampled_from(["whole", "flips", "sha"]))
        if where == "whole":
            return b"[" * n + raw + b"]" * n
        key = b'"flips": ' if where == "flips" else b'"base_sha256": '
        doc = json.loads(raw)
        doc = doc if isinstance(doc, dict) else {"format": "neagari_xor_v2"}  # a wrapped document
        doc.pop(key.decode().split('"')[1], None)
        body = encode(doc)
        return body[:1] + key + b"[" * n + b"]" * n + b", " + body[1:]
    if op == "encoding":
        return draw(st.sampled_from([raw.decode().encode("utf-16"), b"\xef\xbb\xbf" + raw, b"\xff\xfe" + raw,
                                     raw.replace(b'"', b"'")]))
    if op == "bigint":
        return raw.replace(b'"group": ', b'"group": ' + b"9" * 5000 + b", \"g\": ", 1)
    if op == "empty":
        return draw(st.sampled_from([b"", b" ", b"null", b"0", b'""', b"{}", b"[]", b"NaN"]))
    return raw[:-1] + b', "flips": 7}' if raw.endswith(b"}") else raw  # duplicate key: the last wins


# ---------------------------------------------------------------------------- the properties

@pytest.fixture
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cases")


def _tally(request, outcome):
    counts = request.config.stash.setdefault(_TALLY, {})
    counts[outcome] = counts.get(outcome, 0) + 1


_TALLY = pytest.StashKey[dict]()


@FUZZ
@given(data=st.data(), force=st.booleans())
def test_fuzz_documents(base, layout, workdir, request, data, force):
    doc = data.draw(documents(layout))
    _tally(request, check_case(encode(doc), base, layout, force, workdir))


@settings(FUZZ, max_examples=max(40, FUZZ.max_examples // 3))
@given(data=st.data(), force=st.booleans())
def test_fuzz_damaged_text(base, layout, workdir, request, data, force):
    _tally(request, check_case(data.draw(texts(layout)), base, layout, force, workdir))


@settings(FUZZ, max_examples=max(20, FUZZ.max_examples // 6))
@given(data=st.data())
def test_fuzz_valid_patches_apply_and_undo(base, layout, workdir, request, data):
    """Valid moves only: always exit 0, and the recorded patched hash undoes them exactly."""
    recs = data.draw(st.lists(st.builds(
        lambda name, g, bit: {"layer": int(name[4]), "proj": name[6:], "group": g,
                              **({"type": "scale", "bit": bit} if bit is not None else {"type": "group"})},
        st.sampled_from(sorted(N_GROUPS)), st.integers(0, 127), st.one_of(st.none(), st.sampled_from(q1.SCALE_BITS))),
        max_size=20))
    doc = {"format": "neagari-patch", "format_version": 1, "base_sha256": layout["sha"], "search_config": {},
           "flips": recs}
    want = reference(doc, layout, False)
    doc["patched_sha256"] = hashlib.sha256(want).hexdigest()
    assert check_case(encode(doc), base, layout, False, workdir / "kept", keep=True) == "ok"
    case = check_case.last
    rc, err = _run_cli(["apply-patch", "--base", str(case / "out.gguf"), "--out", str(case / "undo.gguf"),
                        str(case / "patch.json")])
    assert rc == 0, err
    assert (case / "undo.gguf").read_bytes() == layout["bytes"]
    shutil.rmtree(case)


# ---------------------------------------------------------------------------- real processes

SUBPROCESS_CASES = {  # the other reproducers run in-process in tests/test_patch.py
    "valid": lambda sha: {"format": "neagari-patch", "format_version": 1, "base_sha256": sha,
                          "flips": [{"layer": 0, "proj": "ffn_up.weight", "group": 3}]},
    "sha with a newline": lambda sha: {"format": "neagari-patch", "format_version": 1,
                                       "base_sha256": "0" * 64 + "\n", "flips": []},
    "deep nesting": lambda sha: "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("name", sorted(SUBPROCESS_CASES))
def test_fuzz_reproducers_in_a_real_process(base, layout, tmp_path, name):
    doc = SUBPROCESS_CASES[name](layout["sha"])
    (tmp_path / "p.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    run = subprocess.run([sys.executable, "-m", "neagari.cli", "apply-patch", "--base", str(base), "--out",
                          str(tmp_path / "o.gguf"), str(tmp_path / "p.json")],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    assert base.read_bytes() == layout["bytes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == (["o.gguf", "p.json"] if run.returncode == 0 else ["p.json"])
    if name == "valid":
        assert run.returncode == 0
    else:
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    counts = request.config.stash.get(_TALLY, {})
    if counts:
        print(f"\nfuzz outcomes: {counts}", file=sys.__stderr__)
