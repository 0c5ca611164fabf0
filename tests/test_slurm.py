"""The workflow through a real SLURM: a single-node cluster on 127.0.0.1 (tests/slurm/), the
executor plugin and the workflow profile (profiles/slurm) as a cluster user runs them.

Part of the smoke workflow (from the data to one search and its patched model) runs twice in
two copies of the repository: locally, then through sbatch. The patch and the patched GGUF must
be byte-identical. Opt-in, since it installs Debian's SLURM packages if they are missing and
starts daemons as root: NEAGARI_SLURM_TEST=1 pytest tests/test_slurm.py -s (about 3 minutes,
mostly the executor's polling); CI sets it. Every external command runs under `timeout -s KILL`;
the daemons are stopped by their process ids at the end. Where Debian's packages cannot be
installed (no mirror reachable) the test skips, saying so; any other set-up failure fails it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "tests" / "slurm"
TARGET = "results/patched/tiny-qat/pass1/math.gguf"
COMPARED = ["results/search/tiny-qat/pass1/math/patch.json", "results/search/tiny-qat/pass1/math/patch.upstream.json",
            "results/patched/tiny-qat/pass1/math.gguf"]
RUN_LIMIT_S = 900  # one workflow run, local or through SLURM
START_LIMIT_S = 300  # includes apt-get when the packages are missing

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("NEAGARI_SLURM_TEST") != "1",
                       reason="starts SLURM daemons as root: set NEAGARI_SLURM_TEST=1 to run"),
    pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="needs root on Linux"),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def killable(cmd: list[str], limit_s: int) -> list[str]:
    """``cmd`` under ``timeout -s KILL``: the executor plugin may not stop on SIGTERM."""
    return ["timeout", "-s", "KILL", str(limit_s), *cmd]


def copy_repository(dest: Path) -> Path:
    """The working tree as a fresh checkout would hold it (tracked and untracked, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            timeout=60, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def slurm_cluster():
    pytest.importorskip("snakemake_executor_plugin_slurm")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("no SLURM and no apt-get to install it")
    # munged runs as its own user and writes into a subfolder: the state folder must be traversable
    state = Path(tempfile.mkdtemp(prefix="neagari-slurm-", dir="/tmp"))
    state.chmod(0o755)
    try:
        started = subprocess.run(killable(["bash", str(SLURM_DIR / "start_slurm.sh"), str(state)], START_LIMIT_S),
                                 capture_output=True, text=True)
        if started.returncode == 3:
            pytest.skip(f"SLURM packages could not be installed here:\n{started.stderr[-1000:]}")
        if started.returncode != 0:
            pytest.fail(f"start_slurm.sh failed ({started.returncode}):\n{started.stderr[-3000:]}")
        yield state
    finally:
        subprocess.run(killable(["bash", str(SLURM_DIR / "stop_slurm.sh"), str(state)], 60), capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


def snakemake(workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "snakemake", TARGET, "--configfile", "config/smoke.yaml", *args]
    t0 = time.monotonic()
    res = subprocess.run(killable(cmd, RUN_LIMIT_S), cwd=workdir, capture_output=True, text=True)
    return res, time.monotonic() - t0


def test_smoke_search_through_slurm_matches_local(slurm_cluster, tmp_path, record_property):
    local = copy_repository(tmp_path / "local")
    res, local_s = snakemake(local, "--cores", "2")
    assert res.returncode == 0, res.stderr[-4000:]

    cluster = copy_repository(tmp_path / "slurm")
    res, slurm_s = snakemake(cluster, "--workflow-profile", "profiles/slurm",
                             "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5")
    assert res.returncode != 137, f"SLURM run killed after {RUN_LIMIT_S} s:\n{res.stderr[-4000:]}"
    assert res.returncode == 0, res.stderr[-4000:]
    log = res.stderr + res.stdout

    # every job went through sbatch, with the profile's resources: the search asked for a GPU and
    # got it (SLURM keeps finished jobs for MinJobAge = 300 s)
    submitted = set(re.findall(r"submitted with SLURM jobid (\d+)", log))
    n_jobs = int(re.search(r"(\d+) of \1 steps \(100%\) done", log).group(1))
    n_local = len(re.findall(r"^localrule \w+:", log, re.M))  # e.g. install_wordnet: runs beside Snakemake
    assert len(submitted) == n_jobs - n_local >= 5
    search_block = log[log.index("rule search:"):]
    assert "gres=gpu:1" in search_block[:search_block.index("submitted with SLURM")]
    search_job = re.search(r"submitted with SLURM jobid (\d+)", search_block).group(1)
    shown = subprocess.run(killable(["scontrol", "show", "job", search_job], 30), capture_output=True, text=True)
    assert "JobState=COMPLETED" in shown.stdout and "gpu:1" in shown.stdout, shown.stdout + shown.stderr

    for rel in COMPARED:
        assert sha256(cluster / rel) == sha256(local / rel), rel

    record_property("local_s", round(local_s, 1))
    record_property("slurm_s", round(slurm_s, 1))
    record_property("slurm_jobs", n_jobs)
    print(f"\n{n_jobs} jobs: local {local_s:.1f} s, through SLURM {slurm_s:.1f} s")
