"""Fuzzing the search checkpoint: a small search on a fixture model is stopped by SIGTERM once per
module, then each case edits a copy of its checkpoint (``checkpoint.json`` fields deleted,
retyped or changed, next_iteration and the accepted moves and part list edited, with and without
recomputing the checksum; raw bytes of the file; bytes, rows and columns of its part files) and
reruns the search through the command line in-process (``neagari search`` on the same --out).

Every case must end in one of two ways: exit 2 with the checkpoint's CheckpointError as the last
stderr line (``neagari: error: <checkpoint.json>: ...; delete <dir> to start the search afresh``;
any line before it is the run's own timestamped log), no patch and the checkpoint files
byte-unchanged; or exit 0 with exactly the patch of an uninterrupted search, which only an edit
the verifier may take as harmless can give (an untouched content written otherwise, parts listed
in another order, stray files, a checksum recomputed over a consistent edit, or an identity of
another search, which starts afresh). An edit whose checksum was not recomputed, or a part file
changed behind the checkpoint's back, must be refused. Never a traceback (an exception escaping
``main``), never a hang (a per-case alarm).

Profiles: the default keeps this module to about ten seconds (``make test``). A longer run by hand:

    NEAGARI_FUZZ_EXAMPLES=300 pytest -q -s -p no:cacheprovider tests/test_fuzz_checkpoint.py
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing
from test_checkpoint import reference_and_stopped
from test_search import _cli

N, EVERY, STOP_AT = 40, 8, 29  # iterations, checkpoint cadence, SIGTERM while proposing this iteration
MODEL = "tied_gqa"
LONG = int(os.environ.get("NEAGARI_FUZZ_EXAMPLES", "0"))
CASE_TIMEOUT_S = 60
_found: dict[str, int] = {}  # case kind and outcome → count
_errors: dict[str, int] = {}  # the first words of each error message → count


def examples(default: int) -> settings:
    return settings(max_examples=LONG or default, deadline=None, derandomize=not LONG, database=None,
                    suppress_health_check=list(HealthCheck))


def argv(model: Path, out: Path, iterations: int = N) -> list[str]:
    return [str(x) for x in _cli(model, out, iterations, "--checkpoint-every", str(EVERY))[3:]]


# ---------------------------------------------------------------------------- the stopped search

def checksum(content: dict) -> str:
    """The checkpoint's checksum as checkpoint.py defines it: sha256 of the canonical JSON of every
    key but ``sha256`` (sorted keys, no whitespace)."""
    body = {k: v for k, v in content.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def identity_checksum(identity) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Stopped:
    model: Path
    out: Path  # the stopped search's --out
    content: dict  # its checkpoint.json
    patch: bytes  # the patch of the uninterrupted search
    work: Path
    n_case: int = 0
    files: dict = field(default_factory=dict)  # part name → bytes


@pytest.fixture(scope="module")
def stopped(fixture_models, tmp_path_factory) -> Stopped:
    model = fixture_models[MODEL]
    root = tmp_path_factory.mktemp("fuzz-ckpt")
    ref, out = reference_and_stopped(model, root, lambda o: argv(model, o), STOP_AT)
    ckpt = out / ".checkpoint"
    content = json.loads((ckpt / "checkpoint.json").read_text())
    assert content["next_iteration"] == STOP_AT + 1 and len(content["parts"]) >= 3
    assert len(content["accepted"]) >= 3 and any(m["type"] == "scale" for m in content["accepted"])
    assert checksum(content) == content["sha256"]
    assert identity_checksum(content["identity"]) == content["identity_sha256"]
    return Stopped(model, out, content, (ref / "patch.json").read_bytes(), root,
                   files={p.name: p.read_bytes() for p in ckpt.iterdir() if p.name != "checkpoint.json"})


# ---------------------------------------------------------------------------- running a case


def run_cli(argv: list[str]) -> tuple[int, str]:
    """main(argv) in-process: (exit status, stderr) (tests/fuzzing.py)."""
    rc, _, err = fuzzing.run_cli(argv, CASE_TIMEOUT_S)
    return rc, err


@dataclass
class Edit:
    """A damaged copy of the checkpoint: what to write, and what the outcome may be."""

    note: str
    content: dict | None = None  # checkpoint.json as JSON (None: ``raw``)
    raw: bytes | None = None
    parts: dict = field(default_factory=dict)  # part name → bytes (None: deleted), over the stopped ones
    must_refuse: bool = True  # False: the verifier may resume it (or start afresh)

    def __repr__(self) -> str:
        return f"Edit({self.note!r}, must_refuse={self.must_refuse})"


def check_case(stopped: Stopped, edit: Edit, kind: str) -> str:
    stopped.n_case += 1
    out = stopped.work / f"case{stopped.n_case}"
    shutil.copytree(stopped.out, out)
    ckpt = out / ".checkpoint"
    path = ckpt / "checkpoint.json"
    path.write_bytes(edit.raw if edit.content is None else (json.dumps(edit.content, sort_keys=True) + "\n").encode())
    for name, data in edit.parts.items():
        if data is None:
            (ckpt / name).unlink()
        else:
            (ckpt / name).write_bytes(data)
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    rc, err = run_cli(argv(stopped.model, out))
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    if rc == 2:
        assert lines and lines[-1].startswith(f"neagari: error: {path}: "), err
        assert lines[-1].endswith(f"; delete {ckpt} to start the search afresh"), lines[-1]
        assert all(line[:4].isdigit() for line in lines[:-1]), err
        assert not (out / "patch.json").exists(), "a refused checkpoint left a patch"
        assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before, "the refusal changed the checkpoint"
        msg = lines[-1][len(f"neagari: error: {path}: "):]
        words = " ".join(w for w in msg.split()[:5] if not any(c.isdigit() or c in "'\"(" for c in w))
        _errors[words] = _errors.get(words, 0) + 1
        outcome = "refused"
    else:
        assert rc == 0, (rc, err)
        assert not edit.must_refuse, f"resumed from a checkpoint that must be refused ({edit.note})"
        assert (out / "patch.json").read_bytes() == stopped.patch, f"resumed to another patch ({edit.note})"
        assert not ckpt.exists()
        outcome = "resumed"
    shutil.rmtree(out)
    _found[f"{kind} {outcome}"] = _found.get(f"{kind} {outcome}", 0) + 1
    return outcome


# ---------------------------------------------------------------------------- known cases

def _reformatted(s: Stopped) -> Edit:  # the same content, written with indentation and keys unsorted
    c = dict(reversed(list(s.content.items())))
    return Edit("reformatted", raw=json.dumps(c, indent=3).encode(), must_refuse=False)


def _parts_reordered(s: Stopped) -> Edit:
    c = copy.deepcopy(s.content)
    c["parts"].reverse()
    c["sha256"] = checksum(c)
    return Edit("parts reordered", c, must_refuse=False)


def _group_bit_dropped(s: Stopped) -> Edit:  # a group move's "bit": null left out (its default)
    c = copy.deepcopy(s.content)
    for m in c["accepted"]:
        if m["type"] == "group":
            del m["bit"]
    c["sha256"] = checksum(c)
    return Edit("group bits dropped", c, must_refuse=False)


def _strays(s: Stopped) -> Edit:  # written after the last checkpoint: discarded on resume
    name = f"part-{len(s.content['parts']):05d}.parquet"
    return Edit("strays", copy.deepcopy(s.content), parts={name: b"junk", "checkpoint.json.tmp": b"{"},
                must_refuse=False)


def _other_identity(s: Stopped) -> Edit:  # another search's checkpoint: dropped, the search starts afresh
    c = copy.deepcopy(s.content)
    c["identity"]["n_targets"] += 1
    c["identity_sha256"] = identity_checksum(c["identity"])
    c["sha256"] = checksum(c)
    return Edit("other identity", c, must_refuse=False)


def _edited(s: Stopped) -> Edit:
    c = copy.deepcopy(s.content)
    c["next_iteration"] = 2 * EVERY
    return Edit("edited, old checksum", c)


def _nested(s: Stopped) -> Edit:  # deeper than the JSON parser's recursion limit
    return Edit("nested", raw=b'{"sha256": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


KNOWN = {"reformatted": (_reformatted, "resumed"), "parts reordered": (_parts_reordered, "resumed"),
         "group bits dropped": (_group_bit_dropped, "resumed"), "strays": (_strays, "resumed"),
         "other identity": (_other_identity, "resumed"), "edited": (_edited, "refused"),
         "nested": (_nested, "refused")}


@pytest.mark.parametrize("case", sorted(KNOWN))
def test_known_edits(stopped, case):
    make, outcome = KNOWN[case]
    assert check_case(stopped, make(stopped), "known") == outcome


# ---------------------------------------------------------------------------- strategies

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                      st.text(max_size=10), st.sampled_from(["", "group", "scale", "part-00000.parquet", "0" * 64]))
json_value = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                         st.dictionaries(st.text(max_size=6), c, max_size=3)),
                          max_leaves=8)


def _paths(value, prefix=()) -> list[tuple]:
    """Every key or index path inside a JSON value (the value's own path first)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


def _at(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def _other_value(draw, v):
    """A value like ``v`` but different: off by one, of another type, another string."""
    if isinstance(v, bool):
        return draw(st.sampled_from([not v, int(v), str(v).lower(), None]))
    if isinstance(v, int):
        return draw(st.sampled_from([v + 1, v - 1, 0, -1, 2**63, 10**30, float(v), str(v), None, True, [v]]))
    if isinstance(v, float):
        return draw(st.sampled_from([v + 1, -v, float("nan"), float("inf"), int(v), str(v)]))
    if isinstance(v, str):
        return draw(st.one_of(st.sampled_from(["", v + "x", v.upper(), v[:-1], " " + v, v + "\n", "part-00000.parquet",
                                               "group", "scale", "0" * 64]), st.text(max_size=8)))
    return draw(json_value)


@st.composite
def content_edit(draw, s: Stopped) -> Edit:
    """An edit of checkpoint.json's content; the checksum recomputed or not."""
    c = copy.deepcopy(s.content)
    how = draw(st.sampled_from(["delete", "type", "value", "value", "next_iteration", "accepted", "accepted",
                                "parts", "identity"]))
    paths = [p for p in _paths(c) if p and p[0] not in ("sha256",)]
    p = draw(st.sampled_from(paths))
    note = f"{how} {'.'.join(map(str, p))}"
    if how == "delete":
        del _at(c, p[:-1])[p[-1]]
    elif how == "type":
        _at(c, p[:-1])[p[-1]] = draw(json_value)
    elif how == "value":
        _at(c, p[:-1])[p[-1]] = _other_value(draw, _at(c, p))
    elif how == "next_iteration":
        n = c["next_iteration"]
        c["next_iteration"] = draw(st.sampled_from([0, 1, n - 1, n + 1, EVERY, 2 * EVERY, N, N + 1, 10**30, -1,
                                                    float(n), str(n), None]))
        note = f"next_iteration {c['next_iteration']!r}"
    elif how == "accepted":
        acc = c["accepted"]
        op = draw(st.sampled_from(["drop", "duplicate", "swap", "field", "insert", "reverse", "clear", "retime"]))
        i, j = draw(st.integers(0, len(acc) - 1)), draw(st.integers(0, len(acc) - 1))
        if op == "drop":
            del acc[i]
        elif op == "duplicate":
            acc.insert(i, dict(acc[i]))
        elif op == "swap":
            acc[i], acc[j] = acc[j], acc[i]
        elif op == "field":
            m = acc[i]
            k = draw(st.sampled_from(["layer", "proj", "group", "type", "bit", "iteration"]))
            m[k] = draw(st.sampled_from({"layer": [0, 1, 2], "proj": ["ffn_up.weight", "ffn_down.weight",
                                                                      "ffn_gate.weight", "attn_q.weight"],
                                         "group": [m["group"] + 1, m["group"] - 1, 0, 10**6],
                                         "type": ["group", "scale"], "bit": [None, 0, 5, 9, 15, 16],
                                         "iteration": [m["iteration"] + 1, m["iteration"] - 1, 0, N]}[k]))
        elif op == "insert":
            acc.insert(i, {"iteration": acc[i]["iteration"] - 1 if acc[i]["iteration"] else 0, "layer": 0,
                           "proj": "ffn_up.weight", "group": 3, "type": "group", "bit": None})
        elif op == "reverse":
            acc.reverse()
        elif op == "clear":
            acc.clear()
        else:  # the iterations shifted together
            for m in acc:
                m["iteration"] += 1
        note = f"accepted {op} {i} {j}"
    elif how == "parts":
        parts = c["parts"]
        op = draw(st.sampled_from(["drop", "duplicate", "reorder", "rename", "rows", "sha", "clear", "last"]))
        i, j = draw(st.integers(0, len(parts) - 1)), draw(st.integers(0, len(parts) - 1))
        if op == "drop":
            del parts[i]
        elif op == "duplicate":
            parts.insert(i, dict(parts[i]))
        elif op == "reorder":
            parts[:] = draw(st.permutations(parts))
        elif op == "rename":
            parts[i]["name"] = draw(st.sampled_from([parts[j]["name"], "part-99999.parquet", "part-0.parquet",
                                                     "../part-00000.parquet", parts[i]["name"] + "\n"]))
        elif op == "rows":
            parts[i]["rows"] = draw(st.sampled_from([parts[i]["rows"] + 1, parts[i]["rows"] - 1, 0, parts[j]["rows"]]))
        elif op == "sha":
            parts[i]["sha256"] = parts[j]["sha256"]
        elif op == "clear":
            parts.clear()
        else:  # the last part dropped and next_iteration wound back to match its first iteration
            dropped = parts.pop()
            c["next_iteration"] -= dropped["rows"]
            c["accepted"] = [m for m in c["accepted"] if m["iteration"] < c["next_iteration"]]
        note = f"parts {op} {i} {j}"
    else:
        key = draw(st.sampled_from(sorted(c["identity"])))
        c["identity"][key] = _other_value(draw, c["identity"][key])
        if draw(st.booleans()):
            c["identity_sha256"] = identity_checksum(c["identity"])
        note = f"identity {key}"
    recompute = draw(st.integers(0, 3)) > 0
    if recompute:
        c["sha256"] = checksum(c)
    note += " (checksum recomputed)" if recompute else ""
    changed = checksum(c) != checksum(s.content) or c.get("sha256") != s.content["sha256"]
    # without a recomputed checksum any change must be caught; with one, a consistent edit may resume
    return Edit(note, c, must_refuse=changed and not recompute)


@st.composite
def raw_edit(draw, s: Stopped) -> Edit:
    """Raw bytes of checkpoint.json: truncate, flip, splice, insert, nest."""
    raw = (json.dumps(s.content, sort_keys=True) + "\n").encode()
    how = draw(st.sampled_from(["truncate", "flip", "splice", "insert", "nest", "bom"]))
    at = draw(st.integers(0, len(raw) - 1))
    if how == "truncate":
        data = raw[:at]
    elif how == "flip":
        b = bytearray(raw)
        b[at] ^= 1 << draw(st.integers(0, 7))
        data = bytes(b)
    elif how == "splice":
        src = draw(st.integers(0, len(raw) - 1))
        n = draw(st.integers(1, 64))
        data = raw[:at] + raw[src:src + n] + raw[at + n:]
    elif how == "insert":
        data = raw[:at] + draw(st.one_of(st.binary(min_size=1, max_size=8),
                                         st.sampled_from([b" ", b"\n", b",", b"[", b"\xff", b"NaN"]))) + raw[at:]
    elif how == "nest":
        depth = draw(st.sampled_from([1, 50, 5000, 100_000]))
        i = raw.index(b'"next_iteration": ') + len(b'"next_iteration": ')
        j = raw.index(b",", i)
        data = raw[:i] + b"[" * depth + raw[i:j] + b"]" * depth + raw[j:]
    else:
        data = b"\xef\xbb\xbf" + raw
    # whitespace outside strings leaves the content as it was
    try:
        same = json.loads(data) == s.content if data != raw else True
    except (ValueError, RecursionError):
        same = False
    return Edit(f"raw {how} at {at}", raw=data, must_refuse=not same)


def _table_edit(draw, df: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    op = draw(st.sampled_from(["accepted", "move", "drop_row", "dup_row", "drop_col", "add_col", "cast", "iteration"]))
    i = draw(st.integers(0, df.height - 1))
    row = pl.arange(0, df.height, eager=True) == i
    if op == "accepted":
        df = df.with_columns(pl.when(row).then(~pl.col("accepted")).otherwise(pl.col("accepted")).alias("accepted"))
    elif op == "move":
        col = draw(st.sampled_from(["layer", "group", "proj", "bit", "move_type"]))
        new = {"layer": pl.lit(draw(st.sampled_from([0, 1, 2, 99]))), "group": pl.lit(draw(st.sampled_from([0, 5, 10**6]))),
               "proj": pl.lit(draw(st.sampled_from(["ffn_up.weight", "ffn_gate.weight", "attn_q.weight"]))),
               "bit": pl.lit(draw(st.sampled_from([0, 9, 15])), dtype=df["bit"].dtype),
               "move_type": pl.lit(draw(st.sampled_from(["group", "scale"])))}[col]
        df = df.with_columns(pl.when(row).then(new).otherwise(pl.col(col)).alias(col))
        op += f" {col}"
    elif op == "drop_row":
        df = df.filter(~row)
    elif op == "dup_row":
        df = pl.concat([df, df.filter(row)])
    elif op == "drop_col":
        df = df.drop(draw(st.sampled_from(df.columns)))
    elif op == "add_col":
        df = df.with_columns(pl.lit(1).alias("extra"))
    elif op == "cast":
        col = draw(st.sampled_from(["iteration", "layer", "accepted", "fitness_after", "gaps", "proj"]))
        df = df.with_columns(pl.col(col).cast(pl.Utf8) if col != "gaps" else pl.col(col).list.first())
        op += f" {col}"
    else:
        df = df.with_columns(pl.when(row).then(pl.col("iteration") + 1000).otherwise(pl.col("iteration")))
    return df, op


@st.composite
def part_edit(draw, s: Stopped) -> Edit:
    """A part file's bytes or table changed, deleted or replaced; the checkpoint's record of it
    (sha256, rows, checksum) updated to match or not."""
    c = copy.deepcopy(s.content)
    entry = draw(st.sampled_from(c["parts"]))
    name, raw = entry["name"], s.files[entry["name"]]
    how = draw(st.sampled_from(["bytes", "table", "table", "replace", "delete"]))
    rows = entry["rows"]
    if how == "bytes":
        at = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "zero"]))
        if op == "flip":
            b = bytearray(raw)
            b[at] ^= 1 << draw(st.integers(0, 7))
            data = bytes(b)
        elif op == "truncate":
            data = raw[:at]
        elif op == "insert":
            data = raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
        else:
            n = draw(st.integers(1, 64))
            data = raw[:at] + b"\0" * n + raw[at + n:]
        note = f"part {name} bytes {op} at {at}"
    elif how == "table":
        df, op = _table_edit(draw, pl.read_parquet(io.BytesIO(raw)))
        buf = io.BytesIO()
        df.write_parquet(buf)
        data, rows = buf.getvalue(), df.height
        note = f"part {name} table {op}"
    elif how == "replace":
        other = draw(st.sampled_from(sorted(s.files)))
        data = s.files[other]
        rows = next(p["rows"] for p in c["parts"] if p["name"] == other)
        note = f"part {name} replaced by {other}"
    else:
        data = None
        note = f"part {name} deleted"
    update = data is not None and draw(st.booleans())
    if update:  # the checkpoint made to agree with the new part file
        entry["sha256"], entry["rows"] = hashlib.sha256(data).hexdigest(), rows
        c["sha256"] = checksum(c)
        note += " (checkpoint updated)"
    return Edit(note, c, parts={name: data}, must_refuse=(data != raw) and not update)


FORGED = [("layer", 2), ("layer", 99), ("proj", "attn_q.weight"), ("proj", "ffn_norm.weight"), ("proj", "nope"),
          ("bit", 10), ("bit", 15), ("bit", 0)]
# a group beyond its tensor is refused against the model's group counts the search passes in


def forge(s: Stopped, k: int, key: str, value) -> Edit:
    """Accepted move ``k`` changed consistently everywhere: its row in the part file, its entry in
    the checkpoint, the part's sha256 and the checksum. Only the search's settings (or the model)
    can tell: a move it could not have proposed must be refused."""
    c = copy.deepcopy(s.content)
    m = c["accepted"][k]
    entry = next(p for p in c["parts"]  # the part holding the move's iteration
                 if m["iteration"] in pl.read_parquet(io.BytesIO(s.files[p["name"]]))["iteration"])
    if key == "bit":
        m["type"] = "scale"
    m[key] = value
    df = pl.read_parquet(io.BytesIO(s.files[entry["name"]]))
    row = df["iteration"] == m["iteration"]
    df = df.with_columns(pl.when(row).then(pl.lit(value, dtype=df[key].dtype)).otherwise(pl.col(key)).alias(key),
                         pl.when(row).then(pl.lit(m["type"])).otherwise(pl.col("move_type")).alias("move_type"))
    buf = io.BytesIO()
    df.write_parquet(buf)
    entry["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    c["sha256"] = checksum(c)
    return Edit(f"forged accepted[{k}] {key}={value!r}", c, parts={entry["name"]: buf.getvalue()})


@st.composite
def forged_move(draw, s: Stopped) -> Edit:
    k = draw(st.integers(0, len(s.content["accepted"]) - 1))
    return forge(s, k, *draw(st.sampled_from(FORGED)))


# ---------------------------------------------------------------------------- properties

@given(data=st.data())
@examples(40)
def test_fuzz_checkpoint_content(stopped, data):
    check_case(stopped, data.draw(content_edit(stopped)), "content")


@given(data=st.data())
@examples(10)
def test_fuzz_checkpoint_bytes(stopped, data):
    check_case(stopped, data.draw(raw_edit(stopped)), "bytes")


@given(data=st.data())
@examples(25)
def test_fuzz_part_files(stopped, data):
    check_case(stopped, data.draw(part_edit(stopped)), "part")


@given(data=st.data())
@examples(6)
def test_fuzz_forged_moves(stopped, data):
    check_case(stopped, data.draw(forged_move(stopped)), "forged")


def test_forged_group_outside_the_tensor(stopped):
    check_case(stopped, forge(stopped, 0, "group", 10**6), "forged")


def test_fuzz_report():
    """Prints what the properties saw (run with -s): case kind and outcome → count."""
    for k, v in sorted(_found.items()):
        print(f"{v:6d}  {k}")
    for k, v in sorted(_errors.items(), key=lambda kv: -kv[1]):
        print(f"{v:6d}  error: {k}")
