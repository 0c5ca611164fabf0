"""Patches: JSON formats, validation, and byte-exact application to a real Q1_0 GGUF."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from neagari.engine import q1
from neagari.engine.gguf_io import TYPE_F32, GGUFFile, write_gguf
from neagari.hashing import sha256_file
from neagari.search.patch import (Move, Patch, PatchError, apply_moves_inplace, apply_patch_files, read_patch,
                           validate_moves, write_patch)

UP, DOWN, NORM = "blk.0.ffn_up.weight", "blk.1.ffn_down.weight", "blk.0.attn_norm.weight"


@pytest.fixture
def base(tmp_path) -> Path:
    rng = np.random.default_rng(7)
    # rows scaled over three decades so the scales cover several fp16 exponents
    up = rng.normal(size=(64, 256)).astype(np.float32) * np.geomspace(0.01, 10, 64, dtype=np.float32)[:, None]
    down = rng.normal(size=(32, 512)).astype(np.float32)
    tensors = [(UP, q1.quantize(up), q1.GGML_TYPE_Q1_0), (DOWN, q1.quantize(down), q1.GGML_TYPE_Q1_0),
               (NORM, np.ones(256, dtype=np.float32), TYPE_F32)]
    return write_gguf(tmp_path / "base.gguf", "qwen3", lambda w: w.add_uint32("qwen3.block_count", 2), tensors)


MOVES = [Move(0, "ffn_up.weight", 5, "group"), Move(0, "ffn_up.weight", 40, "scale", 4),
         Move(0, "ffn_up.weight", 127, "scale", 9), Move(1, "ffn_down.weight", 0, "group"),
         Move(1, "ffn_down.weight", 127, "scale", 7), Move(0, "ffn_up.weight", 40, "group")]


def _write(path, moves, **kw) -> Path:
    return write_patch(path, Patch(moves=moves, **kw))


def _fp16_bits(raw: np.ndarray, group: int) -> int:
    return int(raw[group * 18]) | int(raw[group * 18 + 1]) << 8


def test_apply_matches_hand_computation(base, tmp_path):
    patch = _write(tmp_path / "p.json", MOVES, base_sha256=sha256_file(base))
    digest = apply_patch_files(base, tmp_path / "out.gguf", [patch])
    assert digest == sha256_file(tmp_path / "out.gguf")
    before, after = GGUFFile(base), GGUFFile(tmp_path / "out.gguf")

    # the byte-level expectation, computed without the code under test
    expected = np.fromfile(base, dtype=np.uint8)
    for m in MOVES:
        start = before.tensors[m.tensor].offset + m.group * 18
        if m.type == "group":
            expected[start + 2 : start + 18] ^= 0xFF
        else:
            expected[start + m.bit // 8] ^= 1 << (m.bit % 8)
    assert np.array_equal(np.fromfile(tmp_path / "out.gguf", dtype=np.uint8), expected)

    # the same, read as weights: a group flip negates its 128 weights ...
    w0, w1 = before.dequantize(UP).reshape(-1, 128), after.dequantize(UP).reshape(-1, 128)
    assert np.array_equal(w1[5], -w0[5])
    # ... a scale flip moves |d| by exactly 2^(e - 15 - 10 + b), up if the bit was clear
    for m in (MOVES[2], MOVES[4]):
        raw0 = before.raw(m.tensor).reshape(-1)
        bits = _fp16_bits(raw0, m.group)
        e = (bits >> 10) & 0x1F
        assert 0 < e < 31  # a normal number
        d0 = float(np.uint16(bits).view(np.float16))
        d1 = float(np.uint16(_fp16_bits(after.raw(m.tensor).reshape(-1), m.group)).view(np.float16))
        step = 2.0 ** (e - 25 + m.bit)
        assert d1 - d0 == (-step if bits >> m.bit & 1 else step)
    # group 40 of UP got both moves: scale bit 4 and negated signs
    bits = _fp16_bits(before.raw(UP).reshape(-1), 40)
    d0 = float(np.uint16(bits).view(np.float16))
    d1 = float(np.uint16(bits ^ 16).view(np.float16))
    assert np.allclose(w1[40], -w0[40] * d1 / d0, rtol=0, atol=0)
    # untouched tensors and groups are identical
    assert np.array_equal(before.dequantize(NORM), after.dequantize(NORM))
    untouched = np.setdiff1d(np.arange(w0.shape[0]), [5, 40, 127])
    assert np.array_equal(w0[untouched], w1[untouched])


def test_apply_twice_restores_base(base, tmp_path):
    s0 = sha256_file(base)
    first = apply_patch_files(base, tmp_path / "a.gguf", [_write(tmp_path / "p.json", MOVES, base_sha256=s0)])
    assert first != s0
    # without the patched hash, the patched file is refused as a base
    with pytest.raises(PatchError, match="made for base sha256"):
        apply_patch_files(tmp_path / "a.gguf", tmp_path / "b.gguf", [tmp_path / "p.json"])
    undo = _write(tmp_path / "p2.json", MOVES, base_sha256=s0, patched_sha256=first)
    assert apply_patch_files(tmp_path / "a.gguf", tmp_path / "b.gguf", [undo]) == s0
    assert (tmp_path / "b.gguf").read_bytes() == base.read_bytes()
    # the undo direction also chains: forward then backward in one call
    assert apply_patch_files(base, tmp_path / "c.gguf", [undo, undo]) == s0


def test_sequential_patches_check_intermediate_hash(base, tmp_path):
    s0 = sha256_file(base)
    first = _write(tmp_path / "a.json", MOVES[:3], base_sha256=s0)  # records no patched hash
    s1 = apply_patch_files(base, tmp_path / "mid.gguf", [first])
    # the second patch repeats a move of the first: the in-memory hash must cancel it too
    second = _write(tmp_path / "b.json", MOVES[2:], base_sha256=s1)
    s2 = apply_patch_files(tmp_path / "mid.gguf", tmp_path / "two_steps.gguf", [second])
    assert apply_patch_files(base, tmp_path / "one_step.gguf", [first, second]) == s2
    wrong = _write(tmp_path / "c.json", MOVES[2:], base_sha256=s0)
    with pytest.raises(PatchError, match=f"c.json: made for base sha256 {s0}"):
        apply_patch_files(base, tmp_path / "bad.gguf", [first, wrong])
    assert not (tmp_path / "bad.gguf").exists()


UPSTREAM = {
    "version": 2, "format": "bankai_group_xor_v2", "base_model": "prism-ml/Bonsai-8B-gguf", "domain": "math",
    "method": "group_xor", "search_layers": [0, 1], "iterations": 200,
    "flips": [
        {"layer": 0, "proj": "ffn_up.weight", "group": 3, "type": "scale", "bit": 6, "iteration": 15,
         "fitness_before": 0.0, "fitness_after": 6.6e-07,
         "target_gaps_before": [["math500_step_0014", -8.55], ["math500_step_0014", -8.5]],
         "target_gaps_after": [["math500_step_0014", -8.54], ["math500_step_0014", -8.49]],
         "control_gaps_before": [["geo", 2.5]], "control_gaps_after": [["geo", 2.5]]},
        {"layer": 1, "proj": "ffn_down.weight", "group": 9, "iteration": 20},  # old style: no type
    ],
    "fitness_history": [0.0, 6.6e-07],
}


def test_upstream_round_trip(tmp_path):
    src = tmp_path / "upstream.json"
    src.write_text(json.dumps(UPSTREAM))
    p = read_patch(src)
    assert p.source_format == "bankai_group_xor_v2" and p.base_sha256 is None
    assert p.moves == [Move(0, "ffn_up.weight", 3, "scale", 6), Move(1, "ffn_down.weight", 9, "group")]
    assert p.metadata["domain"] == "math" and p.metadata["search_layers"] == [0, 1]
    again = read_patch(write_patch(tmp_path / "up2.json", p, fmt="upstream"))
    assert again.records == UPSTREAM["flips"] and again.moves == p.moves
    assert again.metadata == p.metadata and again.fitness_history == UPSTREAM["fitness_history"]
    raw = json.loads((tmp_path / "up2.json").read_text())
    assert raw["version"] == 2 and raw["format"] == "neagari_xor_v2" and raw["domain"] == "math"
    # our format needs the base hash; with it, records survive untouched as well
    with pytest.raises(PatchError, match="base_sha256"):
        write_patch(tmp_path / "ours.json", p)
    p.base_sha256 = "ab" * 32
    ours = read_patch(write_patch(tmp_path / "ours.json", p))
    assert ours.records == UPSTREAM["flips"] and ours.base_sha256 == "ab" * 32
    doc = json.loads((tmp_path / "ours.json").read_text())
    assert doc["format"] == "neagari-patch" and doc["format_version"] == 1 and doc["created_by"]["tool"] == "neagari"
    assert not list(tmp_path.glob("*.tmp"))


def test_upstream_patch_needs_force(base, tmp_path):
    doc = dict(UPSTREAM, flips=[m.to_record() for m in MOVES])
    (tmp_path / "u.json").write_text(json.dumps(doc))
    with pytest.raises(PatchError, match="u.json: records no base_sha256.*force"):
        apply_patch_files(base, tmp_path / "out.gguf", [tmp_path / "u.json"])
    assert not (tmp_path / "out.gguf").exists()
    forced = apply_patch_files(base, tmp_path / "out.gguf", [tmp_path / "u.json"], force=True)
    ours = apply_patch_files(base, tmp_path / "o2.gguf", [_write(tmp_path / "p.json", MOVES,
                                                                  base_sha256=sha256_file(base))])
    assert forced == ours


def test_records_must_match_moves(tmp_path):
    with pytest.raises(PatchError, match="2 moves but 1 flip records"):
        Patch(moves=MOVES[:2], records=[MOVES[0].to_record()])
    p = Patch(moves=MOVES[:1], records=[MOVES[1].to_record()], base_sha256="0" * 64)
    with pytest.raises(PatchError, match="flip 0: record .* does not describe"):
        write_patch(tmp_path / "x.json", p)


def test_move_normalises_numpy_ints():
    m = Move(np.int64(3), "ffn_gate.weight", np.int32(7), "scale", np.uint8(5))
    assert m.tensor == "blk.3.ffn_gate.weight" and type(m.group) is int and type(m.bit) is int
    assert Move(0, "x", 1, "group", 4).bit is None


@pytest.mark.parametrize("move, message", [
    (Move(0, "ffn_gate.weight", 0), r"flip 1 \(group flip of blk.0.ffn_gate.weight group 0\): no tensor"),
    (Move(0, "attn_norm.weight", 0), "tensor blk.0.attn_norm.weight is F32, not Q1_0"),
    (Move(1, "ffn_down.weight", 128), "group out of range, blk.1.ffn_down.weight has 128 groups"),
    (Move(0, "ffn_up.weight", 0, "scale", 12), "scale bit 12 is not a mantissa bit"),
])
def test_move_refusals(base, tmp_path, move, message):
    with pytest.raises(PatchError, match=message):
        validate_moves(GGUFFile(base), [MOVES[0], move])
    path = _write(tmp_path / "bad.json", [MOVES[0], move], base_sha256=sha256_file(base))
    with pytest.raises(PatchError, match="bad.json: flip 1"):
        apply_patch_files(base, tmp_path / "out.gguf", [path])
    assert not (tmp_path / "out.gguf").exists() and not (tmp_path / "out.gguf.part").exists()
    mm = np.fromfile(base, dtype=np.uint8)
    with pytest.raises(PatchError):  # the in-place entry point checks too, before touching bytes
        apply_moves_inplace(mm, GGUFFile(base), [MOVES[0], move])
    assert np.array_equal(mm, np.fromfile(base, dtype=np.uint8))


def test_wrong_base_refused(base, tmp_path):
    path = _write(tmp_path / "p.json", MOVES, base_sha256="f" * 64)
    with pytest.raises(PatchError, match=f"p.json: made for base sha256 {'f' * 64}, but .* {sha256_file(base)}"):
        apply_patch_files(base, tmp_path / "out.gguf", [path])
    assert not (tmp_path / "out.gguf").exists()


GOOD_FLIP = {"layer": 0, "proj": "ffn_up.weight", "group": 1, "type": "group"}


@pytest.mark.parametrize("text, message", [
    ('{"format": "neagari-patch", ', "malformed JSON at line 1"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"format": "neagari_xor_v2", "version": 2}', "missing 'flips' list"),
    ('{"format": "something_else", "flips": []}', "unknown patch format 'something_else'"),
    (json.dumps({"format": "neagari_xor_v2", "flips": [GOOD_FLIP, dict(GOOD_FLIP, type="scale", bit=16)]}),
     "flip 1: scale flip needs an integer bit in 0..15, got 16"),
    (json.dumps({"format": "neagari_xor_v2", "flips": [dict(GOOD_FLIP, type="scale")]}),
     "flip 0: scale flip needs an integer bit"),
    (json.dumps({"format": "neagari_xor_v2", "flips": [dict(GOOD_FLIP, group=-1)]}), "flip 0: group must be"),
    (json.dumps({"format": "neagari_xor_v2", "flips": [dict(GOOD_FLIP, layer="3")]}), "flip 0: layer must be"),
    (json.dumps({"format": "neagari_xor_v2", "flips": [dict(GOOD_FLIP, type="row")]}), "flip 0: type must be"),
    (json.dumps({"format": "neagari_xor_v2", "flips": [[0, "ffn_up.weight", 1]]}), "flip 0: flip must be a JSON object"),
    (json.dumps({"format": "neagari-patch", "format_version": 1, "flips": [GOOD_FLIP]}), "lacks base_sha256"),
    (json.dumps({"format": "neagari-patch", "format_version": 1, "base_sha256": "xyz", "flips": []}),
     "base_sha256 must be 64 hex digits"),
    (json.dumps({"format": "neagari-patch", "format_version": 9, "flips": []}), "unsupported neagari-patch format_version 9"),
])
def test_read_refusals(tmp_path, text, message):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(PatchError, match=message) as info:
        read_patch(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_patch_file(tmp_path):
    with pytest.raises(PatchError, match="nope.json: cannot read"):
        read_patch(tmp_path / "nope.json")


# ---------------------------------------------------------------------------- never destroying data

def _cli(*argv) -> int:
    from neagari.cli import main

    return main(["apply-patch", *map(str, argv)])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("neagari: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink", "hardlink", "patch"])
def test_out_that_is_an_input_is_refused(base, tmp_path, monkeypatch, capsys, spelling):
    patch = _write(tmp_path / "p.json", MOVES, base_sha256=sha256_file(base))
    before, patch_before = base.read_bytes(), patch.read_bytes()
    monkeypatch.chdir(tmp_path)
    out = {"same": base, "dot": Path(".") / base.name, "symlink": tmp_path / "link.gguf",
           "hardlink": tmp_path / "hard.gguf", "patch": patch}[spelling]
    if spelling == "symlink":
        out.symlink_to(base)
    elif spelling == "hardlink":
        os.link(base, out)
    assert _cli("--base", base, "--out", out, patch) == 2
    assert ("is the patch file" if spelling == "patch" else "is the base file") in _one_error_line(capsys)
    assert base.read_bytes() == before and patch.read_bytes() == patch_before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("where", ["file parent", "file grandparent", "directory"])
def test_out_that_cannot_be_a_file(base, tmp_path, capsys, where):
    patch = _write(tmp_path / "p.json", MOVES, base_sha256=sha256_file(base))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    out = {"file parent": tmp_path / "afile/out.gguf", "file grandparent": tmp_path / "afile/sub/out.gguf",
           "directory": tmp_path / "adir"}[where]
    assert _cli("--base", base, "--out", out, patch) == 2
    assert "directory" in _one_error_line(capsys)
    assert (tmp_path / "afile").read_text() == "x" and not list((tmp_path / "adir").iterdir())


@pytest.mark.parametrize("what", ["output directory", "base", "patch", "rename"])
def test_permission_errors_are_one_line(base, tmp_path, monkeypatch, capsys, what):
    """We run as root, so unreadable and unwritable places are mocked."""
    import neagari.search.patch as patch_mod

    patch = _write(tmp_path / "p.json", MOVES, base_sha256=sha256_file(base))
    denied = PermissionError(13, "Permission denied")
    if what == "output directory":
        def mkstemp(*a, **k):
            raise PermissionError(13, "Permission denied", str(tmp_path))
        monkeypatch.setattr(patch_mod.tempfile, "mkstemp", mkstemp)
    elif what == "base":
        def gguf(path):
            raise PermissionError(13, "Permission denied", str(path))
        monkeypatch.setattr(patch_mod, "GGUFFile", gguf)
    elif what == "patch":
        real = Path.read_bytes
        monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(denied) if self == patch else real(self))
    else:
        def replace(a, b):
            raise PermissionError(13, "Permission denied", str(b))
        monkeypatch.setattr(patch_mod.os, "replace", replace)
    before = base.read_bytes()
    assert _cli("--base", base, "--out", tmp_path / "out.gguf", patch) == 2
    assert "Permission denied" in _one_error_line(capsys)
    assert base.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.gguf", "p.json"]  # no output, no temp


def test_stale_temp_files_are_removed_and_reported(base, tmp_path, caplog):
    import subprocess
    import sys

    from neagari.search.patch import stale_temp_files

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out.gguf"
    stale = tmp_path / f".out.gguf.neagari-tmp-{dead.pid}-abcd1234"
    live = tmp_path / f".out.gguf.neagari-tmp-{os.getppid()}-abcd1234"  # a running process: kept
    other = tmp_path / f".other.gguf.neagari-tmp-{dead.pid}-abcd1234"  # another output's: kept
    for p in (stale, live, other):
        p.write_bytes(b"half a file")
    assert stale_temp_files(out) == [stale]
    patch = _write(tmp_path / "p.json", MOVES, base_sha256=sha256_file(base))
    with caplog.at_level("WARNING", logger="neagari.search.patch"):
        apply_patch_files(base, out, [patch])
    assert not stale.exists() and live.exists() and other.exists()
    assert f"removed {stale}" in caplog.text and "killed" in caplog.text


def test_killed_apply_patch_leaves_the_output_untouched(base, tmp_path):
    """SIGKILL a real `python -m neagari.cli apply-patch` mid-write (held at the fsync of its
    temporary file by a sitecustomize), then rerun: correct output, no temporary file left."""
    import signal
    import subprocess
    import sys
    import time

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import os, time\nos.fsync = lambda fd: time.sleep(600)\n")
    repo = Path(__file__).resolve().parents[1]
    patch = _write(tmp_path / "p.json", MOVES, base_sha256=sha256_file(base))
    out = tmp_path / "out" / "model.gguf"
    out.parent.mkdir()
    out.write_bytes(b"the previous output")
    cmd = [sys.executable, "-m", "neagari.cli", "apply-patch", "--base", str(base), "--out", str(out), str(patch)]
    env = dict(os.environ, PYTHONPATH=f"{hook}{os.pathsep}{repo}")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(p.name.startswith(".model.gguf.neagari-tmp-")
                                                 for p in out.parent.iterdir()):
            assert proc.poll() is None, "apply-patch ended before it was killed"
            time.sleep(0.02)
        time.sleep(0.2)  # into the held fsync
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    temps = [p for p in out.parent.iterdir() if p.name != "model.gguf"]
    assert len(temps) == 1 and temps[0].stat().st_size == base.stat().st_size
    assert out.read_bytes() == b"the previous output"  # the kill cannot leave a partial OUT
    run = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(repo)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"removed {temps[0]}" in run.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.gguf"]
    assert apply_patch_files(base, tmp_path / "ref.gguf", [patch]) == sha256_file(out)


def test_output_mode_is_a_plain_new_file(base, tmp_path):
    patch = _write(tmp_path / "p.json", MOVES, base_sha256=sha256_file(base))
    apply_patch_files(base, tmp_path / "out.gguf", [patch])
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.gguf").stat().st_mode & 0o777 == 0o666 & ~umask


# reproducers found by tests/test_fuzz_patch.py
@pytest.mark.parametrize("text, message", [
    ('{"format": "neagari-patch", "format_version": 1, "base_sha256": "' + "0" * 64 + '\\n", "flips": []}',
     "base_sha256 must be 64 hex digits"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"format": "neagari_xor_v2", "flips": [{"group": ' + "9" * 5000 + "}]}", "unreadable JSON"),
    ('{"format": "neagari-patch", "format_version": true, "base_sha256": "' + "0" * 64 + '", "flips": []}',
     "format_version True"),
    ('{"format": "neagari_xor_v2", "version": 2.0, "flips": []}', "upstream version 2.0"),
    ('{"format": "neagari-patch", "format_version": 1, "base_sha256": "' + "0" * 64 + '", "metadata": [], "flips": []}',
     "metadata must be a JSON object"),
    ('{"format": "neagari_xor_v2", "flips": [{"layer": 0, "proj": "x", "group": 0, "type": ["group"]}]}',
     "type must be one of"),
])
def test_fuzz_reproducers_read(tmp_path, text, message):
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(PatchError, match=re.escape(message)) as info:
        read_patch(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_fuzz_reproducer_proj_with_a_newline(base, tmp_path, capsys):
    doc = {"format": "neagari-patch", "format_version": 1, "base_sha256": sha256_file(base),
           "flips": [{"layer": 0, "proj": "ffn\nup.weight", "group": 3}]}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    assert _cli("--base", base, "--out", tmp_path / "o.gguf", tmp_path / "p.json") == 2
    assert "no tensor 'blk.0.ffn\\nup.weight'" in _one_error_line(capsys)
