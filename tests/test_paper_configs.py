"""The paper-scale configurations lay out their whole DAG offline, from a checkout with no results:
downloads pending, nothing of the embedded model's stages in it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EMBEDDED_ONLY = {"build_corpus", "train_tokenizer", "train_embedded_model", "train_embedded_float", "quantize_posthoc",
                 "use_shipped_model", "build_task_sets", "evaluate_quality"}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True, timeout=60).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def dry_run(checkout: Path, config: str) -> dict[str, int]:
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", config], cwd=checkout,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    stats = res.stdout[res.stdout.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


@pytest.mark.parametrize("config, searches", [("config/bonsai-8b.yaml", 22), ("config/bonsai-1.7b.yaml", 9)])
def test_paper_dag_offline(checkout, config, searches):
    jobs = dry_run(checkout, config)
    assert not EMBEDDED_ONLY & set(jobs), f"embedded-model rules in a paper DAG: {EMBEDDED_ONLY & set(jobs)}"
    assert jobs["download_model"] == 1 and jobs["download_file"] >= 6
    assert jobs["search"] == searches and jobs["assemble_patch"] == searches and jobs["build_paper"] == 1
    if "8b" in config:  # §6.7: GSM8K, IFEval, MMLU, MuSR on the base and the patched model
        assert jobs["build_benchmark_items"] == 1 and jobs["eval_benchmark"] == 2
    else:  # the paper's 1.7B runs: targeted searches and their held-out verbatim evaluation
        assert "eval_benchmark" not in jobs and jobs["eval_heldout_verbatim"] == 2
