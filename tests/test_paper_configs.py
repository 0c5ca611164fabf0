"""The paper-scale configurations lay out their whole DAG offline, from a checkout with no results:
downloads pending, nothing of the embedded model's stages in it. Their pins: every source pinned by
a commit and a sha256, or its null sha256 explained by a comment on its entry (and, for the ternary
models no public record pins, a null revision too). The ternary configs run the 1-bit ones'
experiments on PrismML's Ternary Bonsai models, so their plans match the 1-bit plans job for job."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neagari.workflow.configcheck import validate_config
from neagari.workflow.downloads import unpinned_reasons
from neagari.workflow.runs import search_runs

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["config/bonsai-8b.yaml", "config/bonsai-1.7b.yaml", "config/ternary-bonsai-8b.yaml",
           "config/ternary-bonsai-1.7b.yaml"]
# each ternary config and the 1-bit config it mirrors
TERNARY = {"config/ternary-bonsai-8b.yaml": "config/bonsai-8b.yaml",
           "config/ternary-bonsai-1.7b.yaml": "config/bonsai-1.7b.yaml"}
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


def dry_run_output(checkout: Path, config: str, *targets: str) -> str:
    res = subprocess.run([sys.executable, "-m", "snakemake", *targets, "-n", "--configfile", config], cwd=checkout,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def job_counts(stdout: str) -> dict[str, int]:
    stats = stdout[stdout.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def dry_run(checkout: Path, config: str, *targets: str) -> dict[str, int]:
    return job_counts(dry_run_output(checkout, config, *targets))


def pass2_chain(stdout: str, model: str) -> list[str]:
    """The pass-2 domains of a dry run's plan in the order they build on each other: each search's
    first input is the model it starts from."""
    starts = dict((m.group(2), m.group(1)) for m in re.finditer(
        rf"^rule search:\n    input: (\S+?)(?:,.*)?\n    output: results/search/{model}/pass2/(\w+)/patch\.json",
        stdout, re.M))
    chain, start = [], next(s for s in starts.values() if "/pass1/" in s)
    while (d := next((d for d, s in starts.items() if s == start), None)) is not None:
        chain.append(d)
        start = f"results/patched/{model}/pass2/{d}.gguf"
    assert len(chain) == len(starts), starts
    return chain


@pytest.mark.parametrize("config, searches", [("config/bonsai-8b.yaml", 22), ("config/bonsai-1.7b.yaml", 9),
                                              ("config/ternary-bonsai-8b.yaml", 22),
                                              ("config/ternary-bonsai-1.7b.yaml", 9)])
def test_paper_dag_offline(checkout, config, searches):
    out = dry_run_output(checkout, config)
    jobs = job_counts(out)
    model = yaml.safe_load((REPO / config).read_text())["search"]["models"][0]
    assert not EMBEDDED_ONLY & set(jobs), f"embedded-model rules in a paper DAG: {EMBEDDED_ONLY & set(jobs)}"
    assert jobs["download_model"] == 1 and jobs["download_file"] >= 6
    assert jobs["search"] == searches and jobs["assemble_patch"] == searches and jobs["build_paper"] == 1
    if "8b" in config:  # §6.7: GSM8K, IFEval, MMLU, MuSR on the base and the patched model, by lm-eval
        assert jobs["eval_benchmark"] == 2 and "build_benchmark_items" not in jobs
        # pass 2 in the v3 manifest's order, on top of pass 1's last domain; the benchmarks read its last
        p2 = ["instruction", "tool_calling", "editing", "coding", "math"]
        assert pass2_chain(out, model) == p2
        assert re.search(rf"^    input: results/patched/{model}/pass1/coding\.gguf,.*\n"
                         rf"    output: results/search/{model}/pass2/instruction/patch\.json", out, re.M)
        assert re.search(rf"^rule eval_benchmark:\n    input: results/patched/{model}/pass2/math\.gguf,", out, re.M)
    else:  # the paper's 1.7B runs: targeted searches and their held-out verbatim evaluation
        assert "eval_benchmark" not in jobs and jobs["eval_heldout_verbatim"] == 2


@pytest.mark.parametrize("config", CONFIGS)
def test_paper_downloads_offline(checkout, config):
    """`snakemake downloads` plans every configured source: each file, the model, the derived sets."""
    cfg = yaml.safe_load((REPO / config).read_text())
    jobs = dry_run(checkout, config, "downloads")
    assert jobs["download_file"] == len(cfg["downloads"]["files"]) and jobs["download_model"] == 1
    assert jobs["derive_probes"] == len(cfg["downloads"]["derived"])


# ---------------------------------------------------------------------------- pins


def sources(cfg: dict) -> dict[tuple[str, ...], dict]:
    """Every download source of a config, by its place in it."""
    out = {("models", m, "download"): s["download"] for m, s in cfg["models"].items() if s.get("source") == "download"}
    out.update({("downloads", "files", k): s for k, s in cfg["downloads"]["files"].items()})
    return out


def key_line(root: yaml.Node, place: tuple[str, ...]) -> int:
    """0-based line of the key that opens the entry at ``place``."""
    node, line = root, None
    for part in place:
        key, node = next((k, v) for k, v in node.value if k.value == part)
        line = key.start_mark.line
    return line


def attached_comment(lines: list[str], line: int) -> str:
    """The comment on an entry: the comment lines right above its key (no blank line between) and a
    comment after it on the key's own line."""
    above = []
    i = line - 1
    while i >= 0 and lines[i].lstrip().startswith("#"):
        above.insert(0, lines[i].strip().lstrip("#").strip())
        i -= 1
    trailing = lines[line].split(" #", 1)[1].strip() if " #" in lines[line] else ""
    return " ".join(above + [trailing]).strip()


@pytest.mark.parametrize("ternary", sorted(TERNARY))
def test_ternary_configs_mirror_the_one_bit_ones(checkout, ternary):
    """The same searches (stage and run names), the same settings but the model and its ternary
    keys, the same downloads but the 1-bit model's published patches (audited by the 1-bit config)."""
    ours, theirs = (yaml.safe_load((REPO / c).read_text()) for c in (ternary, TERNARY[ternary]))
    model, one_bit = ours["search"]["models"][0], theirs["search"]["models"][0]
    assert list(ours["models"]) == [model] and ours["models"][model]["source"] == "download"
    assert ours["models"][model]["download"]["hub"]["repo"].startswith("prism-ml/Ternary-Bonsai-")
    a, b = dict(ours["search"]), dict(theirs["search"])
    assert a.pop("models") == [model] and b.pop("models") == [one_bit]
    assert a.pop("ternary_moves") == ["negate"] and a["null_baseline"].pop("mode") == "uniform"
    assert a == b
    for key in ("seed", "device", "probe_sets", "score", "audits", "evaluation"):
        assert ours.get(key) == theirs.get(key), key
    assert not ours.get("published_patches")
    patches = {k for k in theirs["downloads"]["files"] if k.startswith("neagari/patches/")}
    assert set(ours["downloads"]["files"]) == set(theirs["downloads"]["files"]) - patches
    assert {k: v for k, v in ours["downloads"].items() if k != "files"} == \
        {k: v for k, v in theirs["downloads"].items() if k != "files"}
    plans = []
    for cfg in (ours, theirs):
        cfg = copy.deepcopy(cfg)
        validate_config(cfg, REPO / "config/schema.yaml")
        plans.append([(stage, name) for _, stage, name in search_runs(cfg)])
    assert plans[0] == plans[1] and len(plans[0]) in (22, 9)
    ours_jobs, theirs_jobs = dry_run(checkout, ternary), dry_run(checkout, TERNARY[ternary])
    for job in ("search", "assemble_patch", "randomize_null_model", "calibrate_probes", "eval_benchmark",
                "eval_heldout_verbatim", "build_paper"):
        assert ours_jobs.get(job) == theirs_jobs.get(job), job
    assert "audit_published" not in ours_jobs
    assert ("audit_published" in theirs_jobs) == bool(theirs.get("published_patches"))


@pytest.mark.parametrize("config", CONFIGS)
def test_every_null_pin_says_why(config):
    text = (REPO / config).read_text()
    cfg, root, lines = yaml.safe_load(text), yaml.compose(text), text.splitlines()
    upstream = cfg["downloads"]["upstream"]
    short = upstream["commit"][:7]
    nulls = []
    for place, spec in sources(cfg).items():
        reasons = unpinned_reasons(spec, upstream)
        # a revision or commit that pins nothing is never acceptable here, but for a ternary model
        # no public record pins (its comment says so); otherwise only an unknown hash
        allowed = [[], ["sha256 is null"]]
        if config in TERNARY and place[0] == "models":
            allowed.append(["sha256 is null", "hub revision None is not a commit id"])
        assert reasons in allowed, f"{'.'.join(place)}: {reasons}"
        if not reasons:
            continue
        nulls.append(place)
        why = attached_comment(lines, key_line(root, place))
        assert len(why) >= 30, f"{config}: {'.'.join(place)} has sha256 null and no comment saying why"
        if "upstream" in spec:  # a file of the paper's repository: why the snapshot at the commit lacks it
            assert f"not in the repository snapshot at {short}" in why, why
    blob_only = [place for place, spec in sources(cfg).items() if spec.get("sha256") is None and spec.get("git_blob")]
    for place in blob_only:  # pinned by the git blob id a snapshot's tree lists: the comment says so
        why = attached_comment(lines, key_line(root, place))
        assert f"not in the repository snapshot at {short}" in why and "git blob" in why, why
    if config == "config/bonsai-8b.yaml":  # the three upstream files over the snapshot's 4 MiB limit
        assert nulls == []
        assert [p[-1] for p in blob_only] == ["neagari/patches/v2_patches/patch_editing.json",
                                              "neagari/patches/v2_patches/patch_instruction.json",
                                              "neagari/patches/v3_patches/patch_instruction.json"]
    elif config in TERNARY:  # the ternary model file alone: no public record of its revision or hash
        assert nulls == [("models", cfg["search"]["models"][0], "download")]
        assert "no public record" in attached_comment(lines, key_line(root, nulls[0]))
    else:
        assert nulls == []


def test_reason_comments_are_found_where_they_are():
    text = "a:\n  # x is null: not in the snapshot for a good reason\n  x: {sha256: null}\n\n  y: 1 # short\n  z: 2\n"
    root, lines = yaml.compose(text), text.splitlines()
    assert attached_comment(lines, key_line(root, ("a", "x"))) == "x is null: not in the snapshot for a good reason"
    assert attached_comment(lines, key_line(root, ("a", "y"))) == "short"
    assert attached_comment(lines, key_line(root, ("a", "z"))) == ""


def test_8b_weight_cache_is_bf16():
    """The 8B run's weight cache is bf16 (31 GiB and 6x faster than fp32's 44 GiB, BENCHMARKS.md); the
    1.7B run keeps the default, fp32."""
    assert yaml.safe_load((REPO / "config/bonsai-8b.yaml").read_text())["weights_dtype"] == "bf16"
    assert "weights_dtype" not in yaml.safe_load((REPO / "config/bonsai-1.7b.yaml").read_text())
