"""Shared session fixtures: the fixture models, and one run of the smoke workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The smoke workflow (config/smoke.yaml) run once per session in a copy of the repository.
    Shared: a test that changes files there works on its own copy (shutil.copytree keeps mtimes)."""
    work = copy_repository(tmp_path_factory.mktemp("smoke") / "wf")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run([str(SNAKEMAKE), "--cores", "2", "--configfile", "config/smoke.yaml", "--quiet"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    return work
