"""Checkpoints are verified before a search resumes from them: a search on a fixture model is stopped
by SIGTERM midway, its checkpoint is damaged in one way per case, and the rerun through the CLI must
refuse it (exit 2, one stderr line naming the checkpoint and saying what to do, no patch) while an
untouched copy still resumes to the byte-identical patch."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import polars as pl
import pytest
import torch

from neagari.cli import build_parser
from neagari.cli import main as cli_main
from neagari.engine.engine import Engine
from neagari.search import split_probes
from neagari.search.checkpoint import CHECKPOINT_NAME, canonical_sha256
from neagari.search.runner import Search, search_config
from test_search import _cli

N = 300  # iterations; _cli checkpoints every 40
STOP_AT = 130  # SIGTERM while proposing this iteration: the checkpoint is at STOP_AT + 1


def search_from_argv(model, out, argv) -> Search:
    """The search the CLI command ``neagari ARGV`` runs, in this process."""
    a = build_parser().parse_args([str(x) for x in argv])
    # the thread count the CLI sets (float sums, hence near-tie verdicts, depend on it); without it
    # this process would keep whatever an earlier test left
    if a.threads:
        torch.set_num_threads(a.threads)
    targets, controls = split_probes(a.probes, a.controls or ())
    return Search(Engine.load(model), model, targets, controls, search_config(vars(a)), out, label=a.label)


def reference_and_stopped(model, root: Path, argv_of, stop_at: int) -> tuple[Path, Path]:
    """(out dir of the uninterrupted search, out dir of the same search stopped by SIGTERM while
    proposing iteration ``stop_at``, so its checkpoint is at ``stop_at + 1``). ``argv_of(out)``: the
    CLI arguments of the search writing to ``out``."""
    ref = root / "ref"
    s = search_from_argv(model, ref, argv_of(ref))
    r = s.run(progress=False)
    s.finish(r, ref / "patch.json", ref / "iterations.parquet", ref / "summary.json")

    out = root / "stopped"
    s = search_from_argv(model, out, argv_of(out))
    propose = s.proposer.propose

    def propose_then_term(t):
        if t == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)  # the search's own handler: finish, checkpoint, exit
        return propose(t)

    s.proposer.propose = propose_then_term
    with pytest.raises(SystemExit, match="stopped by SIGTERM"):
        s.run(progress=False)
    return ref, out


@pytest.fixture(scope="module")
def stopped(fixture_models, tmp_path_factory):
    """(model, out dir of a search stopped by SIGTERM at iteration STOP_AT + 1, reference patch bytes)."""
    model = fixture_models["mha_untied"]
    ref, out = reference_and_stopped(model, tmp_path_factory.mktemp("ckpt"), lambda o: _cli(model, o, N)[3:], STOP_AT)
    ck = json.loads((out / ".checkpoint" / CHECKPOINT_NAME).read_text())
    assert ck["next_iteration"] == STOP_AT + 1 and len(ck["parts"]) == 4 and len(ck["accepted"]) >= 2
    assert not (out / "patch.json").exists()
    return model, out, (ref / "patch.json").read_bytes()


def _copy(stopped, tmp_path) -> tuple[Path, Path]:
    out = tmp_path / "run"
    shutil.copytree(stopped[1], out)
    return out, out / ".checkpoint" / CHECKPOINT_NAME


def _rewrite(path: Path, change, checksum: bool = True) -> None:
    """Apply ``change`` to the checkpoint's JSON; recompute its checksum so that only the check meant
    for the change can catch it (``checksum=False``: leave the old one)."""
    data = json.loads(path.read_text())
    change(data)
    if checksum and "sha256" in data:
        data["sha256"] = canonical_sha256(data)
    path.write_text(json.dumps(data))


def _drop_accepted(data):
    data["accepted"].pop(len(data["accepted"]) // 2)


def _old_format(data):  # the layout written before checkpoints were verified
    data.clear()
    data.update({"identity": {}, "next_iteration": 131, "parts": [], "accepted": []})


def _wrong_part(ckpt: Path):  # a readable table, but not the one the checkpoint recorded
    part = ckpt.parent / "part-00001.parquet"
    pl.read_parquet(part).with_columns(pl.col("accepted").not_()).write_parquet(part)


def _forge(ckpt: Path, key: str, value) -> None:
    """Accepted move 0 changed consistently everywhere: its row in the part file, its checkpoint
    entry, the part's sha256 and the checksum. Only the search's settings can tell."""
    data = json.loads(ckpt.read_text())
    m = data["accepted"][0]
    if key == "bit":
        m["type"] = "scale"
    m[key] = value
    for p in data["parts"]:
        path = ckpt.parent / p["name"]
        df = pl.read_parquet(path)
        if m["iteration"] in df["iteration"]:
            row = df["iteration"] == m["iteration"]
            df.with_columns(pl.when(row).then(pl.lit(value, dtype=df[key].dtype)).otherwise(pl.col(key)).alias(key),
                            pl.when(row).then(pl.lit(m["type"])).otherwise(pl.col("move_type")).alias("move_type")
                            ).write_parquet(path)
            p["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    data["sha256"] = canonical_sha256(data)
    ckpt.write_text(json.dumps(data))


def _part_retyped(ckpt: Path) -> None:
    """part-00001's iterations stored as strings (they cast back to integers), recorded consistently:
    was a polars SchemaError traceback when the resume concatenated the parts."""
    data = json.loads(ckpt.read_text())
    path = ckpt.parent / "part-00001.parquet"
    pl.read_parquet(path).with_columns(pl.col("iteration").cast(pl.Utf8)).write_parquet(path)
    data["parts"][1]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    data["sha256"] = canonical_sha256(data)
    ckpt.write_text(json.dumps(data))


DAMAGE = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not valid JSON"),
    "garbage": (lambda p: p.write_bytes(b"\x00\xffPAR1\x9c garbage \x01" * 10), "not valid JSON"),
    "empty": (lambda p: p.write_bytes(b""), "not valid JSON"),
    "nested": (lambda p: p.write_bytes(b'{"sha256": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
               "not usable JSON (nested too deeply"),  # was a RecursionError traceback
    "edited": (lambda p: _rewrite(p, lambda d: d.update(next_iteration=40), checksum=False), "checksum mismatch"),
    "no checksum": (lambda p: _rewrite(p, _old_format), "has no checksum"),
    "key dropped": (lambda p: _rewrite(p, lambda d: d.pop("parts")), "parts: Field required"),
    "wrong type": (lambda p: _rewrite(p, lambda d: d.update(next_iteration="131")), "next_iteration"),
    "wrong move type": (lambda p: _rewrite(p, lambda d: d["accepted"][0].update(layer=0.0)), "accepted.0.layer"),
    "far ahead": (lambda p: _rewrite(p, lambda d: d.update(next_iteration=1_000_000)), "beyond the search's 300"),
    "rewound": (lambda p: _rewrite(p, lambda d: d.update(next_iteration=40)), "not the 40 before next_iteration"),
    "move removed": (lambda p: _rewrite(p, _drop_accepted), "accepted moves but the checkpoint lists"),
    "part deleted": (lambda p: (p.parent / "part-00002.parquet").unlink(), "part-00002.parquet named in the "
                     "checkpoint is missing"),
    "part changed": (_wrong_part, "part-00001.parquet was changed"),
    "part retyped": (_part_retyped, "part-00001.parquet column 'iteration' is String, not the iteration table's"),
    # moves the search could not have proposed were a KeyError / IndexError traceback in the replay
    "forged layer": (lambda p: _forge(p, "layer", 2), "is in layer 2, not one of the search's layers [0, 1]"),
    "forged proj": (lambda p: _forge(p, "proj", "attn_q.weight"), "moves 'attn_q.weight', not one of the search's "
                    "projections ffn_gate, ffn_up, ffn_down"),
    "forged bit": (lambda p: _forge(p, "bit", 15), "flips scale bit 15, not one of the search's scale bits"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_checkpoint_is_refused(stopped, tmp_path, case, capsys, monkeypatch):
    damage, what = DAMAGE[case]
    out, ckpt = _copy(stopped, tmp_path)
    damage(ckpt)
    before = {p.name: p.read_bytes() for p in ckpt.parent.iterdir()}
    argv = _cli(stopped[0], out, N)
    if case == "truncated":  # one case through a real process; the others run the same main() here
        r = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=300)
        rc, err = r.returncode, r.stderr
    else:
        monkeypatch.chdir(tmp_path)
        rc, err = cli_main([str(a) for a in argv[3:]]), capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    # the error is one line, the last; anything before it is the run's own timestamped log
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("neagari: error:")]
    assert errors == lines[-1:], err
    assert all(line[:4].isdigit() for line in lines[:-1]), err
    assert lines[-1].startswith(f"neagari: error: {ckpt}: ")
    assert lines[-1].endswith(f"; delete {ckpt.parent} to start the search afresh")
    assert what in lines[-1]
    assert not (out / "patch.json").exists()
    assert {p.name: p.read_bytes() for p in ckpt.parent.iterdir()} == before  # nothing deleted or rewritten


@pytest.mark.slow
def test_untouched_checkpoint_resumes_to_the_same_patch(stopped, tmp_path):
    out, ckpt = _copy(stopped, tmp_path)
    (ckpt.parent / "part-00004.parquet").write_bytes(b"written after the last checkpoint")
    subprocess.run(_cli(stopped[0], out, N), check=True, capture_output=True, timeout=300)
    assert (out / "patch.json").read_bytes() == stopped[2]
    assert not ckpt.parent.exists()


@pytest.mark.slow
def test_checkpoint_of_another_search_is_dropped(stopped, tmp_path):
    out, ckpt = _copy(stopped, tmp_path)
    r = subprocess.run(_cli(stopped[0], out, 30), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "checkpoint belongs to another configuration; starting afresh" in r.stderr
    assert json.loads((out / "summary.json").read_text())["iterations_run"] == 30
