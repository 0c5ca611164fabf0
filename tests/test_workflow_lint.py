"""The workflow as code: it runs from any working directory, Snakemake's linter finds nothing in it,
every rule that runs torch declares the threads it uses, and snakefmt leaves the rules as they are."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

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


@pytest.mark.parametrize("members", ["", "embedded-qat"])
def test_make_model_trains_although_the_shipped_files_are_present(tmp_path, members):
    """`make model`'s command (make -n) in a checkout that holds resources/models/ and no results/
    plans the training of every recipe member (or of MEMBERS only) and their shipping."""
    make = subprocess.run(["make", "-n", "model", f"MEMBERS={members}"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.splitlines()
    cmd = next(line for line in make if "snakemake" in line).split()
    work = tmp_path / "checkout"
    (work / "resources").mkdir(parents=True)
    (work / "resources/models").symlink_to(REPO / "resources/models")
    args = [a if a != "config/model.yaml" else str(REPO / "config/model.yaml") for a in cmd[1:]]
    res = snakemake("-n", "--directory", str(work), *args, cwd=work)
    assert res.returncode == 0, res.stderr[-2000:]
    trained = re.findall(r"^rule (train_embedded_\w+):", res.stdout, flags=re.M)
    recipe = yaml.safe_load((REPO / "config/model.yaml").read_text())["models"]
    want = [members] if members else list(recipe)
    assert len(trained) == len(want), res.stdout[-3000:]
    assert res.stdout.count("rule ship_") == len(want)


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


# ---------------------------------------------------------------------------- threads


def _module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _imports(statements) -> list[str]:
    """Modules named by the import statements among ``statements``, at module level (function and
    class bodies are not run on import); ``from a import b`` names a and a.b (b may be a module)."""
    names, todo = [], list(statements)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for field in ("body", "orelse", "finalbody", "handlers"):
            todo += getattr(node, field, None) or []
    return names


def loads_torch(statements) -> bool:
    """Whether these statements import torch, themselves or through the neagari modules they import."""
    seen, todo = set(), _imports(statements)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top == "torch":
            return True
        if top == "neagari":
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # a package's __init__ runs before its modules
                if (f := _module_file(".".join(parts[:i]))) is not None:
                    todo += _imports(ast.parse(f.read_text()).body)
    return False


def rule_blocks() -> dict[str, str]:
    """Rule name -> its text; a ``use rule A as B`` rule's text is A's followed by its own."""
    blocks = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        # a rule may be defined under an if/else of the config (indented): one name, either text
        for part in re.split(r"(?m)^(?=\s*rule \w+:|\s*use rule )", smk.read_text()):
            if m := re.match(r"\s*rule (\w+):", part):
                blocks[m.group(1)] = part
            elif m := re.match(r"\s*use rule (\w+) as (\w+)", part):
                blocks[m.group(2)] = blocks[m.group(1)] + part
    return blocks


def torch_rules() -> dict[str, Path]:
    """Every rule whose script loads torch -> the script."""
    out = {}
    for name, text in rule_blocks().items():
        if m := re.search(r'^    script:\s*"\.\./(scripts/\w+\.py)"', text, re.M):
            script = REPO / m.group(1)
            if loads_torch(ast.parse(script.read_text()).body):
                out[name] = script
    return out


def test_the_torch_rules_are_found():
    rules = torch_rules()
    assert {"search", "score_probes", "calibrate_probes", "evaluate_quality", "terrain_model", "score_stage_models",
            "subspace_bases", "subspace_sweep", "eval_heldout_verbatim", "train_embedded_model",
            "train_embedded_float"} <= set(rules)
    assert not {"plot_probe_gaps", "build_paper", "download_file", "eval_benchmark"} & set(rules)


def test_every_torch_rule_declares_its_threads():
    blocks = rule_blocks()
    missing = [name for name in torch_rules() if not re.search(r"^    threads:", blocks[name], re.M)]
    assert not missing, f"rules that run torch without threads: {missing}"


def test_every_torch_script_runs_on_the_rule_threads():
    """rule_context sets torch's threads where torch is loaded when it is entered: every torch
    script loads it before its (module-level) ``with rule_context(...)``."""
    for rule, script in torch_rules().items():
        body = ast.parse(script.read_text()).body
        first = next((i for i, node in enumerate(body) if isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id", None) == "rule_context"
            for item in node.items)), None)
        assert first is not None, f"{script.name} (rule {rule}) does not run in rule_context"
        assert loads_torch(body[:first]), f"{script.name} (rule {rule}) loads torch after entering rule_context"


def test_rule_context_sets_torch_threads(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from neagari.workflow.smk import rule_context, set_torch_threads

    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    want = 3 if before != 3 else 2
    smk = SimpleNamespace(input=[], output=[], params={}, wildcards={}, rule="threads_test", log=[], config={},
                          threads=want)
    try:
        with rule_context(smk, config_keys=[]):
            assert torch.get_num_threads() == want
        set_torch_threads(None)  # a snakemake object without threads leaves torch as it is
        assert torch.get_num_threads() == want
        set_torch_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_slurm_profile_reserves_the_rule_threads():
    """The profile leaves cpus_per_task alone, so that the executor asks for the rule's threads."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert "cpus_per_task" not in profile["default-resources"]
    assert not [r for r, res in profile["set-resources"].items() if "cpus_per_task" in res]
    blocks = rule_blocks()
    assert set(profile["set-threads"]) <= set(blocks) and set(profile["set-resources"]) <= set(blocks)
    jobstep = pytest.importorskip("snakemake_executor_plugin_slurm_jobstep")
    job = SimpleNamespace(threads=3, resources=SimpleNamespace(get=lambda key, default=None: None))
    assert jobstep.get_cpu_setting(job, gpu=True) == "--cpus-per-task=3"


# ---------------------------------------------------------------------------- formatting


def test_snakefmt_check():
    """Snakefile and rules/*.smk as snakefmt formats them (`make format`)."""
    pytest.importorskip("snakefmt", reason="snakefmt is pinned in requirements-test.txt")
    res = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules/"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
