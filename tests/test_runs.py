"""Search-run records (neagari.workflow.runs) and the config's defaults: the schema fills every
default, the search's defaults are its dataclasses' and the schema repeats them exactly."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from neagari.search.runner import SearchConfig, search_config, search_defaults
from neagari.workflow.runs import SearchRun, final_run, pass2_order_problem, runs_of, search_runs

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"


def validated(name: str) -> dict:
    config = yaml.safe_load((REPO / "config" / name).read_text())
    validate(config, schema=str(SCHEMA))
    return config


def test_schema_search_defaults_are_the_dataclasses():
    search = yaml.safe_load(SCHEMA.read_text())["properties"]["search"]["properties"]
    defaults = search_defaults()
    schema = {k: search[k]["default"] for k in ("projections", "group_sampling", "scale_bits", "window", "min_rate",
                                                "speculate", "checkpoint_every")}
    targeted = search["targeted"]["properties"]
    schema.update(lam=targeted["lambda"]["default"], epsilon=targeted["epsilon"]["default"],
                  slack_ratio=targeted["slack_ratio"]["default"])
    for key, value in schema.items():
        want = defaults[key]
        assert value == (list(want) if isinstance(want, tuple) else want), key


def test_validation_fills_nested_defaults():
    config = {"run_name": "t", "seed": 0, "device": "cpu", "models": {"m": {"source": "embedded"}},
              "probe_sets": {"p": "p.json"}}
    validate(config, schema=str(SCHEMA))
    assert config["weights_dtype"] == "fp32" and config["embedded"]["train"]["steps"] == 600
    assert config["embedded"]["corpus"]["n_wordnet"] == 0 and config["audits"]["window"] == 200
    assert config["evaluation"]["heldout_verbatim"] == "results/data/heldout/verbatim_heldout.json"
    assert config["downloads"] == {"allow_unpinned": False, "files": {}, "derived": {}}
    assert config["published_patches"] == {}
    # opt-in stages: off without their block, on (with every default) with an empty one
    assert config["terrain"]["enabled"] is False and config["terrain"]["wordnet_dir"] == "results/wordnet"
    assert config["subspace"]["enabled"] is False and config["subspace"]["ranks"] == [8, 32]
    on = {**copy.deepcopy(config), "terrain": {}, "subspace": {}}
    validate(on, schema=str(SCHEMA))
    assert on["terrain"]["enabled"] is True and on["subspace"]["enabled"] is True


def test_smoke_runs_keep_their_names_and_settings():
    config = validated("smoke.yaml")
    runs = search_runs(config)
    assert [(s, n) for _, s, n in runs] == [
        ("pass1", "math"), ("pass1", "verbatim"), ("pass2", "math"), ("pass2", "verbatim"), ("isolated", "verbatim"),
        ("lambda", "math-lam3.0"), ("targeted", "focused_proportional"), ("targeted", "focused_barrier"),
        ("nullbase", "trained-s0"), ("nullbase", "null-s0"), ("randomflip", "math")]
    lam = runs[("tiny-qat", "lambda", "math-lam3.0")]
    assert (lam.domain, lam.lam, lam.probes) == ("math", 3.0, "results/probes/tiny-qat/math.json")
    null = runs[("tiny-qat", "nullbase", "null-s0")]
    assert (null.kind, null.seed, null.start) == ("null", 0, "results/models/null/tiny-qat-s0.gguf")
    p2 = runs[("tiny-qat", "pass2", "verbatim")]
    assert p2.start == "results/patched/tiny-qat/pass2/math.gguf"
    # upstream's promotion: pass 2 carries controls within itself, from the base controls again
    assert runs[("tiny-qat", "pass2", "math")].promoted == ()
    assert p2.promoted == ("results/search/tiny-qat/pass2/math/promoted.json",)
    assert runs[("tiny-qat", "pass1", "verbatim")].promoted == ("results/search/tiny-qat/pass1/math/promoted.json",)
    assert runs[("tiny-qat", "randomflip", "math")].iterations_from == ("results/search/tiny-qat/pass1/math/summary.json",)
    assert [r.name for r in runs_of(runs, "tiny-qat", ("pass1",))] == ["math", "verbatim"]
    # what the search rule builds: a run's own settings over the shared ones, the rest the defaults
    shared = {k: config["search"][k] for k in ("layers", "projections", "group_sampling", "window", "min_rate",
                                               "speculate", "checkpoint_every", "scale_bits")}
    cfg = search_config({**shared, **runs[("tiny-qat", "targeted", "focused_proportional")].search_settings()})
    assert isinstance(cfg, SearchConfig) and (cfg.fitness, cfg.epsilon, cfg.slack_ratio, cfg.lam) == \
        ("focused_proportional", 0.5, 0.5, 1.0)
    rf = search_config({**shared, **runs[("tiny-qat", "randomflip", "math")].search_settings(), "iterations": 3})
    assert rf.accept_all and rf.fitness == "average" and rf.proposal.scale_prob == 0.0 and rf.proposal.layers == (0,)


def test_crossed_promotion_hands_pass_2_what_pass_1_carried():
    config = validated("smoke.yaml")
    config["search"]["pipeline"]["promotion"] = "crossed"
    runs = search_runs(config)
    assert [runs[("tiny-qat", "pass2", d)].promoted for d in ("math", "verbatim")] == \
        [("results/search/tiny-qat/pass1/verbatim/promoted.json",)] * 2


def test_pass_2_chains_in_its_own_order():
    config = validated("config.yaml")
    search = config["search"]
    pass1 = search["pipeline"]["order"]
    assert final_run(search) == ("pass2", pass1[-1])  # default: pass 2 in the pass-1 order
    p2 = ["instruction", "tool_calling", "editing", "coding", "math"]
    assert p2 != pass1 and sorted(p2) == sorted(pass1)
    search["scale_pass"]["order"] = p2
    runs = search_runs(config)
    m = "embedded-qat"
    assert [r.name for r in runs_of(runs, m, ("pass1",))] == pass1  # pass 1 keeps its order
    assert [runs[(m, "pass1", d)].start for d in pass1[1:]] == \
        [f"results/patched/{m}/pass1/{d}.gguf" for d in pass1[:-1]]
    chain = runs_of(runs, m, ("pass2",))
    assert [r.name for r in chain] == p2
    # each pass-2 domain starts from the one before it in pass 2's order, the first from pass 1's last
    assert [r.start for r in chain] == [f"results/patched/{m}/pass1/{pass1[-1]}.gguf"] + \
        [f"results/patched/{m}/pass2/{d}.gguf" for d in p2[:-1]]
    # upstream promotion: pass 2 carries within itself, in its own order
    assert [r.promoted for r in chain] == [()] + [(f"results/search/{m}/pass2/{d}/promoted.json",) for d in p2[:-1]]
    assert final_run(search) == ("pass2", "math")
    search["pipeline"]["promotion"] = "crossed"  # every pass-2 domain gets what pass 1 carried
    assert {r.promoted for r in runs_of(search_runs(config), m, ("pass2",))} == \
        {(f"results/search/{m}/pass1/{pass1[-1]}/promoted.json",)}
    search["scale_pass"]["enabled"] = False
    assert final_run(search) == ("pass1", pass1[-1])


@pytest.mark.parametrize("order", [["editing", "math"], ["editing", "instruction", "tool_calling", "math", "math"],
                                   ["editing", "instruction", "tool_calling", "math", "coding", "verbatim"]])
def test_pass_2_order_must_be_a_permutation_of_pass_1(order):
    config = validated("config.yaml")
    assert pass2_order_problem(config["search"]) is None
    config["search"]["scale_pass"]["order"] = order
    problem = pass2_order_problem(config["search"])
    assert problem.startswith("config: search.scale_pass.order: ") and "\n" not in problem


def test_no_searches_without_a_search_block():
    assert search_runs({"seed": 0}) == {}


@pytest.mark.parametrize("config", ["config.yaml", "bonsai-1.7b.yaml", "bonsai-8b.yaml"])
def test_paper_configs_have_unique_run_names(config):
    runs = search_runs(validated(config))
    assert runs and all(isinstance(r, SearchRun) and r.key == k for k, r in runs.items())
    assert len({r.patched for r in runs.values()}) == len(runs)


def test_runs_imports_only_the_standard_library():
    tree = ast.parse((REPO / "neagari/workflow/runs.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {n for n in names if n and n.startswith("neagari")}
