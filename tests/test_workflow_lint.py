"""The workflow as code: it runs from any working directory, Snakemake's linter finds nothing in it,
and every rule that runs torch declares the threads it uses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["config/config.yaml", "config/smoke.yaml"]


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def job_inputs(stdout: str) -> set[str]:
    """Every input file a dry run lists."""
    return {p.strip() for line in re.findall(r"^\s*input: (.*)$", stdout, re.M) for p in line.split(",")}


# ---------------------------------------------------------------------------- any working directory


@pytest.mark.parametrize("config", CONFIGS)
def test_dry_run_from_another_directory(tmp_path, config):
    """The repository's files (figure style, paper templates, shipped probe sets) are found from a
    working directory that holds nothing; the outputs go there."""
    res = snakemake("-n", "--configfile", str(REPO / config), "--directory", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    inputs = job_inputs(res.stdout)
    outside = {p for p in inputs if not p.startswith("results/")}
    assert str(REPO / "resources/matplotlibrc") in outside
    assert all(p.startswith(str(REPO) + "/") and Path(p).is_file() for p in outside), outside
    if config == "config/smoke.yaml":
        assert str(REPO / "resources/probes/smoke.json") in outside


def test_config_paths_prefer_the_working_directory(tmp_path):
    """A relative path of the config names the working directory's file where there is one, the
    repository's otherwise; the repository's own files are always the repository's."""
    own = tmp_path / "resources/probes/smoke.json"
    own.parent.mkdir(parents=True)
    own.write_text((REPO / "resources/probes/smoke.json").read_text())
    res = snakemake("-n", "results/probes/tiny-qat/smoke.json", "results/figures/gaps/tiny-qat/math.png",
                    "--configfile", str(REPO / "config/smoke.yaml"), "--directory", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    inputs = job_inputs(res.stdout)
    assert "resources/probes/smoke.json" in inputs and str(REPO / "resources/probes/smoke.json") not in inputs
    assert str(REPO / "resources/matplotlibrc") in inputs


def test_dry_run_from_the_repository_names_its_files_relatively():
    """From the repository itself, its files keep the relative names they always had (no input
    set changes, no reruns)."""
    res = snakemake("-n", "--forceall", "--nolock", "results/figures/gaps/tiny-qat/math.png", "--configfile",
                    "config/smoke.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    inputs = job_inputs(res.stdout)
    assert "resources/matplotlibrc" in inputs and not any(p.startswith("/") for p in inputs), inputs


# ---------------------------------------------------------------------------- Snakemake's linter


@pytest.mark.parametrize("config", CONFIGS)
def test_snakemake_lint_is_clean(config):
    res = snakemake("--lint", "--configfile", config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
