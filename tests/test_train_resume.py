"""Training checkpoints: a stopped run resumes to the same bits as one that never stopped; a
checkpoint of another run is refused; a finished run returns at once; bf16 autocast."""

from __future__ import annotations

import functools
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from neagari.embedded.checkpoint import CHECKPOINT_NAME
from neagari.engine.config import ModelConfig
from neagari.embedded.train import Packed, TrainConfig, build_model, train

VOCAB, SEQ, STEPS = 300, 32, 12
ROOT = Path(__file__).resolve().parents[1]


class Stop(Exception):
    """Ends a run after a step, as a kill would (the checkpoint of that step is already written)."""


def rows(n: int, seed: int) -> Packed:
    g = torch.Generator().manual_seed(seed)
    return Packed(torch.randint(0, VOCAB, (n, SEQ + 1), generator=g), torch.ones(n, SEQ + 1))


def run(variant: str = "qat", ckpt=None, stop_at: int | None = None, pause_s: float = 0.0, on_step=None,
        **settings):
    """A tiny training run: (final state_dict, history). `stop_at` raises Stop after that step;
    `pause_s` sleeps after each step (gives a killer time to act; the result does not change);
    `on_step(step)` is called after each step."""
    cfg = ModelConfig(n_layer=1, hidden=128, ffn=256, n_head=2, n_kv_head=1, head_dim=64, vocab_size=VOCAB,
                      context_length=64, rope_theta=1e4, tied_embeddings=variant == "fp")
    model = build_model(cfg, qat=variant == "qat", seed=0)
    tc = TrainConfig(**{"steps": STEPS, "batch_size": 4, "seq_len": SEQ, "warmup": 3, "eval_every": 4,
                        "threads": 1, "checkpoint_dir": None if ckpt is None else str(ckpt),
                        "checkpoint_every_s": 0.0, **settings})

    def progress(step, rec):
        if on_step is not None:
            on_step(step)
        time.sleep(pause_s)
        if step == stop_at:
            raise Stop

    history = train(model, rows(48, 1), rows(8, 2), tc, progress=progress)
    return {k: v.clone() for k, v in model.state_dict().items()}, history


@functools.cache
def reference(variant: str, autocast: str = "none"):
    """The uninterrupted run, without checkpoints."""
    return run(variant, autocast=autocast)


def losses(history):
    return [{k: v for k, v in rec.items() if k != "elapsed_s"} for rec in history]


def assert_same_run(got, want):
    (sd, hist), (sd_want, hist_want) = got, want
    assert sd.keys() == sd_want.keys()
    assert all(torch.equal(sd[k], sd_want[k]) for k in sd)
    assert losses(hist) == losses(hist_want)  # the same floats, eval losses included


def saved_step(ckpt: Path) -> int:
    return torch.load(ckpt / CHECKPOINT_NAME, weights_only=True)["step"]


@pytest.mark.parametrize("variant", ["qat", "fp"])
def test_a_stopped_run_resumes_bit_identically(tmp_path, variant):
    with pytest.raises(Stop):
        run(variant, tmp_path, stop_at=5)
    assert saved_step(tmp_path) == 5
    resumed = run(variant, tmp_path)
    assert_same_run(resumed, reference(variant))
    hist = resumed[1]
    assert [h["step"] for h in hist] == list(range(1, STEPS + 1))
    assert sum(h["eval_loss"] is not None for h in hist) == 3  # steps 4, 8, 12
    elapsed = [h["elapsed_s"] for h in hist]
    assert elapsed == sorted(elapsed)  # the resumed steps continue the saved time


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    with pytest.raises(Stop):
        run("qat", tmp_path, stop_at=3)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    for other in ({"lr": 1e-3}, {"threads": 2}, {"autocast": "bf16"}):
        with pytest.raises(ValueError, match=re.escape(str(tmp_path)) + ".*another training run"):
            run("qat", tmp_path, **other)
    with pytest.raises(ValueError, match="another training run"):  # other initial weights
        run("fp", tmp_path)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before  # never overwritten
    # where and how often to save are not part of the run's identity
    assert_same_run(run("qat", tmp_path, checkpoint_every_s=1e9), reference("qat"))


def test_a_finished_run_returns_its_history_without_training(tmp_path):
    seen = []

    def spy(step):
        seen.append((tmp_path / CHECKPOINT_NAME).exists())

    first = run("qat", tmp_path, on_step=spy, checkpoint_every_s=1e9)
    assert seen == [False] * (STEPS - 1) + [True]  # a long interval: the only checkpoint is the last
    assert_same_run(first, reference("qat"))
    seen.clear()
    again = run("qat", tmp_path, on_step=spy)
    assert seen == []  # no step ran
    assert again[1] == first[1]  # the saved log, elapsed_s included
    assert_same_run(again, first)  # the model holds the finished weights


def test_bf16_autocast_changes_the_run_and_resumes_bit_identically(tmp_path):
    bf16, fp32 = reference("qat", "bf16"), reference("qat")
    assert all(math.isfinite(h["train_loss"]) for h in bf16[1])
    assert all(math.isfinite(h["eval_loss"]) for h in bf16[1] if h["eval_loss"] is not None)
    assert [h["train_loss"] for h in bf16[1]] != [h["train_loss"] for h in fp32[1]]
    assert not all(torch.equal(bf16[0][k], fp32[0][k]) for k in fp32[0])
    with pytest.raises(Stop):
        run("qat", tmp_path, stop_at=7, autocast="bf16")
    assert_same_run(run("qat", tmp_path, autocast="bf16"), bf16)
    with pytest.raises(ValueError, match="autocast"):
        run("qat", autocast="fp16")


def test_a_killed_training_process_resumes_bit_identically(tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_train_resume as t; "
            f"t.run('qat', {str(tmp_path)!r}, pause_s=0.25)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (tmp_path / CHECKPOINT_NAME).exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert saved_step(tmp_path) < STEPS  # killed mid-run
    assert_same_run(run("qat", tmp_path), reference("qat"))
