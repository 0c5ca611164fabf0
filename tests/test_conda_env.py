"""envs/neagari.yaml (the rules' conda environment) and its post-deploy script, checked without
conda: the same pins as requirements.txt, no path that breaks when Snakemake copies the file, and a
post-deploy script that installs the package from the workflow's checkout."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = REPO / "envs" / "neagari.yaml"
POST_DEPLOY = REPO / "envs" / "neagari.post-deploy.sh"
# requirements.txt name -> conda-forge name, where they differ
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


def normal(name: str) -> str:
    """PEP 503 name without extras (pandera[polars] -> pandera)."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def env_packages() -> tuple[dict[str, str], dict[str, str]]:
    """(conda name -> version, pip requirement name -> version) of the env file."""
    deps = yaml.safe_load(ENV.read_text())["dependencies"]
    conda, pip = {}, {}
    for dep in deps:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                name, _, version = line.partition("==")
                pip[name.strip()] = version.strip()
        else:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(?:==?|\s)\s*([0-9][^\s,<>]*)?", dep.strip())
            if m:
                conda[m.group(1)] = m.group(2) or ""
            else:  # a range (setuptools>=77,<90) or a bare name
                conda[re.split(r"[<>=\s]", dep, maxsplit=1)[0]] = ""
    return conda, pip


def test_the_env_file_parses_with_conda_forge_only():
    env = yaml.safe_load(ENV.read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    conda, _ = env_packages()
    assert conda["python"] == "3.11" and "pip" in conda


def test_every_pinned_requirement_is_in_the_env_at_the_same_version():
    conda, pip = env_packages()
    conda_n = {normal(k): v for k, v in conda.items()}
    pip_n = {normal(k): v for k, v in pip.items()}
    for name, version in requirements().items():
        key = normal(name)
        found = pip_n.get(key) or conda_n.get(normal(CONDA_NAMES.get(key, key)))
        assert found == version, f"{name}=={version}: env has {found!r}"
        assert not (key in pip_n and normal(CONDA_NAMES.get(key, key)) in conda_n), f"{name} twice"
    # extras are kept where the pip section installs a package with them
    assert "pandera[polars]" in pip


def test_the_env_has_no_package_requirements_txt_does_not_pin():
    conda, pip = env_packages()
    pinned = {normal(CONDA_NAMES.get(normal(n), n)) for n in requirements()} | {normal(n) for n in requirements()}
    tools = {"python", "pip", "setuptools"}
    extra = {normal(n) for n in list(conda) + list(pip)} - pinned - tools
    assert not extra, f"not in requirements.txt: {sorted(extra)}"
    assert "pyarrow" not in {normal(n) for n in list(conda) + list(pip)}
    assert "diskcache" in conda


def test_no_paths_in_the_env_file():
    """Snakemake copies the env file to .snakemake/conda/<hash>.yaml before conda reads it."""
    conda, pip = env_packages()
    for line in list(pip) + list(conda):
        assert not line.startswith(("-e", "--editable", ".", "/", "file:", "git+")), line
        assert "/" not in line, line


def test_the_post_deploy_script_sits_beside_the_env_file_and_runs():
    assert POST_DEPLOY.name == ENV.stem + ".post-deploy.sh"  # Snakemake's name for it
    assert os.access(POST_DEPLOY, os.X_OK)
    text = POST_DEPLOY.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(POST_DEPLOY)], check=True)
    # it is run from a copy under .snakemake/conda/: no path relative to the script itself
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "$0" not in code and "BASH_SOURCE" not in code and "dirname" not in code
    assert "NEAGARI_WORKFLOW_DIR" in text and "--no-deps" in text


def test_the_post_deploy_script_refuses_a_directory_that_is_not_the_checkout(tmp_path):
    """Run as Snakemake runs it (a copy, in a working directory that is not the checkout)."""
    copy = tmp_path / ".snakemake" / "conda" / "abc.post-deploy.sh"
    copy.parent.mkdir(parents=True)
    copy.write_text(POST_DEPLOY.read_text())
    env = {k: v for k, v in os.environ.items() if k != "NEAGARI_WORKFLOW_DIR"}
    for extra in ({}, {"NEAGARI_WORKFLOW_DIR": str(tmp_path)}):
        done = subprocess.run(["bash", str(copy)], cwd=tmp_path, env={**env, **extra}, capture_output=True,
                              text=True, check=False)
        assert done.returncode == 1
        assert "set NEAGARI_WORKFLOW_DIR" in done.stderr and str(tmp_path) in done.stderr
