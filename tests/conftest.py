"""Shared session fixtures: the fixture models, and one run of the smoke workflow."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from neagari.engine.fixtures import FixtureSpec, write_fixture_model

# Shapes that exercise the engine's corners: GQA, head_dim != hidden / heads, untied heads.
SHAPES = {
    "tied_gqa": FixtureSpec(n_layer=2, hidden=128, ffn=256, n_head=4, n_kv_head=2, head_dim=32, seed=1),
    "untied_wide_heads": FixtureSpec(n_layer=3, hidden=128, ffn=384, n_head=2, n_kv_head=1, head_dim=128,
                                     tied_embeddings=False, seed=2),
    "mha_untied": FixtureSpec(n_layer=2, hidden=256, ffn=256, n_head=8, n_kv_head=8, head_dim=32,
                              tied_embeddings=False, rope_theta=1_000_000.0, seed=3),
}


@pytest.fixture(scope="session")
def fixture_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("models")
    return {name: write_fixture_model(root / f"{name}.gguf", spec) for name, spec in SHAPES.items()}


@pytest.fixture(scope="session", params=sorted(SHAPES))
def fixture_model(request, fixture_models):
    return fixture_models[request.param]


REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
COPY_IGNORE = shutil.ignore_patterns(".venv", "results", "logs", ".snakemake", ".git", "__pycache__", ".pytest_cache")


def copy_repository(dest: Path) -> Path:
    """The working tree copied to `dest` as a one-commit git repository (so records hold a commit)."""
    shutil.copytree(REPO, dest, ignore=COPY_IGNORE)
    git = ["git", "-C", str(dest), "-c", "user.name=neagari", "-c", "user.email=neagari@localhost"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "smoke"], check=True)
    return dest


SMOKE_TIMEOUT_S = 1200
# The smoke workflow of this session, started in the background once collection shows a test that
# needs it (it takes minutes, the rest of the suite runs meanwhile): its directory, process, log.
_SMOKE: dict = {}


def _needs_smoke(item) -> bool:
    return "smoke_run" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    # The smoke run's tests last (a stable sort), so the background run has the whole suite's time.
    items.sort(key=_needs_smoke)


def pytest_collection_finish(session):
    if not any(_needs_smoke(item) for item in session.items):
        return
    work = copy_repository(Path(tempfile.mkdtemp(prefix="neagari-smoke-")) / "wf")
    log = open(work.parent / "snakemake.log", "w")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([str(SNAKEMAKE), "--cores", "2", "--configfile", "config/smoke.yaml", "--quiet"],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _SMOKE.update(work=work, proc=proc, log=log)


def pytest_sessionfinish(session, exitstatus):
    proc = _SMOKE.pop("proc", None)
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    if "log" in _SMOKE:
        _SMOKE.pop("log").close()
    if "work" in _SMOKE:
        shutil.rmtree(_SMOKE.pop("work").parent, ignore_errors=True)


@pytest.fixture(scope="session")
def smoke_run() -> Path:
    """The smoke workflow (config/smoke.yaml) run once per session in a copy of the repository,
    started in the background at the end of collection. Shared: a test that changes files there
    works on its own copy (shutil.copytree keeps mtimes)."""
    proc, work = _SMOKE["proc"], _SMOKE["work"]
    try:
        proc.wait(timeout=SMOKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the smoke workflow ran past {SMOKE_TIMEOUT_S} s")
    _SMOKE["log"].flush()
    assert proc.returncode == 0, (work.parent / "snakemake.log").read_text()[-3000:]
    return work
