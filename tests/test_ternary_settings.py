"""The ternary settings of a config, search.ternary_moves and search.null_baseline.mode: what the
schema allows, how they reach the searches and the null models (neagari.workflow.runs), and that
a config leaving them at their defaults gives every rule the params of a config without them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from neagari.engine import q2
from neagari.search import null
from neagari.search.proposal import ProposalConfig
from neagari.search.runner import search_config
from neagari.workflow import runs as R
from neagari.workflow.configcheck import ConfigError, validate_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"
# the fields of a run's record while every ternary setting holds its default
RECORD_FIELDS = {"model", "stage", "name", "domain", "start", "seed", "iterations", "lam", "fitness", "scale_prob",
                 "epsilon", "slack_ratio", "barrier_mu", "focus_order", "stop_when_done", "accept_all", "kind",
                 "controls", "promoted", "iterations_from"}
SHARED = ("layers", "projections", "group_sampling", "window", "min_rate", "speculate", "checkpoint_every", "scale_bits")


def smoke(**search) -> dict:
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    for key, value in search.items():
        if key == "mode":
            config["search"]["null_baseline"]["mode"] = value
        else:
            config["search"][key] = value
    validate_config(config, SCHEMA)
    return config


def test_the_workflow_repeats_the_search_defaults():
    """runs.py (standard library only) names the moves, modes and defaults the search defines."""
    assert R.TERNARY_MOVES == q2.GROUP_MOVES and R.DEFAULT_TERNARY_MOVES == ProposalConfig.ternary_moves
    assert R.NULL_MODES == null.NULL_MODES and R.DEFAULT_NULL_MODE == null.DEFAULT_MODE
    props = yaml.safe_load(SCHEMA.read_text())["properties"]["search"]["properties"]
    tm = props["ternary_moves"]
    assert tuple(tm["items"]["enum"]) == R.TERNARY_MOVES and tuple(tm["default"]) == R.DEFAULT_TERNARY_MOVES
    mode = props["null_baseline"]["properties"]["mode"]
    assert tuple(mode["enum"]) == R.NULL_MODES and mode["default"] == R.DEFAULT_NULL_MODE


def test_schema_fills_the_defaults():
    config = smoke()
    assert config["search"]["ternary_moves"] == ["negate"] and config["search"]["null_baseline"]["mode"] == "uniform"


@pytest.mark.parametrize("key, value, line", [
    ("ternary_moves", ["negate", "zero_plu"],
     "config: search.ternary_moves[1]: 'zero_plu' is not one of 'negate', 'zero_plus', 'zero_minus'; "
     "did you mean 'zero_plus'?"),
    ("ternary_moves", ["group"], "config: search.ternary_moves[0]: 'group' is not one of 'negate', 'zero_plus', "
                                 "'zero_minus'"),
    ("ternary_moves", [], "config: search.ternary_moves: needs at least 1 items, has 0"),
    ("ternary_moves", ["negate", "negate"], "config: search.ternary_moves: ['negate', 'negate'] has non-unique elements"),
    ("ternary_moves", "negate", "config: search.ternary_moves: expected array, got string 'negate'"),
    ("mode", "keep_zero", "config: search.null_baseline.mode: 'keep_zero' is not one of 'uniform', 'keep_zeros'; "
                          "did you mean 'keep_zeros'?"),
    ("mode", "signs", "config: search.null_baseline.mode: 'signs' is not one of 'uniform', 'keep_zeros'"),
])
def test_schema_refuses_in_one_line(key, value, line):
    with pytest.raises(ConfigError) as err:
        smoke(**{key: value})
    assert err.value.lines == [line]


@pytest.mark.parametrize("moves", [["negate"], ["zero_plus"], ["negate", "zero_plus", "zero_minus"],
                                   ["zero_minus", "negate"]])
def test_schema_accepts(moves):
    assert smoke(ternary_moves=moves)["search"]["ternary_moves"] == moves


def test_default_settings_leave_every_record_and_param_as_it_was():
    for config in (smoke(), smoke(ternary_moves=["negate"])):  # left out, or the default written out
        runs = R.search_runs(config)
        assert runs and all(r.ternary_moves is None for r in runs.values())
        assert all(set(r.as_dict()) == RECORD_FIELDS for r in runs.values())
        assert all("ternary_moves" not in r.search_settings() for r in runs.values())
        assert R.null_model_params(config) == {}
    assert R.null_model_params({"seed": 0}) == {} and R.null_mode({"search": None}) == "uniform"


def test_every_run_carries_the_ternary_moves():
    moves = ["zero_minus", "negate", "zero_plus"]
    config = smoke(ternary_moves=moves)
    runs = R.search_runs(config)
    assert {r.stage for r in runs.values()} == set(R.STAGES)  # every kind of search
    for run in runs.values():
        assert run.ternary_moves == tuple(moves) and run.as_dict()["ternary_moves"] == moves
        settings = run.search_settings()
        assert settings["ternary_moves"] == moves
        # what the search rule hands the search: the shared settings under the run's own
        cfg = search_config({**{k: config["search"][k] for k in SHARED}, **settings, "iterations": 1})
        assert cfg.proposal.ternary_moves == tuple(moves)
        assert cfg.as_dict()["proposal"]["ternary_moves"] == moves  # in the checkpoint identity and summary
    # the order is the config's: it decides which index draws which move
    assert search_config({**{k: config["search"][k] for k in SHARED}, "iterations": 1,
                          "ternary_moves": ["negate"]}).as_dict()["proposal"].get("ternary_moves") is None


def test_the_null_mode_is_a_param_only_off_its_default():
    assert R.null_model_params(smoke(mode="keep_zeros")) == {"mode": "keep_zeros"}
    assert R.null_model_params(smoke(mode="uniform")) == {}
    # it touches no search run: the null runs start from the same null model path either way
    a, b = R.search_runs(smoke()), R.search_runs(smoke(mode="keep_zeros"))
    assert [r.as_dict() for r in a.values()] == [r.as_dict() for r in b.values()]


def test_the_ternary_configs_set_them_explicitly():
    for name in ("ternary-bonsai-8b.yaml", "ternary-bonsai-1.7b.yaml"):
        config = yaml.safe_load((REPO / "config" / name).read_text())
        validate_config(copy.deepcopy(config), SCHEMA)
        assert config["search"]["ternary_moves"] == ["negate"] and config["search"]["null_baseline"]["mode"] == "uniform"
