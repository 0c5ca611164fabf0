"""config/schema.yaml and its checker (neagari.workflow.configcheck): every key is described, the
shipped configs validate with exactly the defaults Snakemake's validate fills, and a mistake gives
a few short lines that name the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from neagari.workflow.configcheck import MAX_ERRORS, ConfigError, validate_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"
CONFIGS = ["config.yaml", "smoke.yaml", "model.yaml", "bonsai-8b.yaml", "bonsai-1.7b.yaml", "ternary-bonsai-8b.yaml",
           "ternary-bonsai-1.7b.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def described(schema: dict) -> tuple[list[str], list[str]]:
    """(every property, those without a description): the entries of properties, schema-valued
    additionalProperties and $defs, walked through items, if/then/else, not and the combinators."""
    everything, missing = [], []

    def check(node, path):
        everything.append(path)
        if not (isinstance(node, dict) and str(node.get("description", "")).strip()):
            missing.append(path)

    def walk(node, path):
        if not isinstance(node, dict):
            return
        for name, sub in (node.get("properties") or {}).items():
            check(sub, f"{path}.{name}")
            walk(sub, f"{path}.{name}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            check(extra, f"{path}.*")
            walk(extra, f"{path}.*")
        for key in ("items", "if", "then", "else", "not", "propertyNames"):
            walk(node.get(key), f"{path}[{key}]")
        for key in ("allOf", "anyOf", "oneOf"):
            for i, sub in enumerate(node.get(key) or []):
                walk(sub, f"{path}[{key}{i}]")
        for name, sub in (node.get("$defs") or {}).items():
            check(sub, f"$defs.{name}")
            walk(sub, f"$defs.{name}")

    walk(schema, "config")
    return everything, missing


def test_every_property_has_a_description():
    schema = yaml.safe_load(SCHEMA.read_text())
    everything, missing = described(schema)
    assert len(everything) > 170
    assert not missing, f"properties without a description: {missing}"


def test_the_schema_holds_only_schema_keywords():
    """A description in a flow mapping with a comma or colon in it turns into a stray key."""
    from jsonschema import Draft202012Validator

    schema = yaml.safe_load(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    keywords = set(Draft202012Validator.VALIDATORS) | {"$schema", "$defs", "$id", "description", "default", "then", "else"}

    def walk(node, path):
        if not isinstance(node, dict):
            return
        stray = set(node) - keywords
        assert not stray, f"{path}: not schema keywords: {sorted(stray)}"
        for key in ("properties", "$defs"):
            for name, sub in (node.get(key) or {}).items():
                walk(sub, f"{path}.{name}")
        for key in ("additionalProperties", "items", "if", "then", "else", "not", "propertyNames"):
            walk(node.get(key), f"{path}[{key}]")
        for key in ("allOf", "anyOf", "oneOf"):
            for i, sub in enumerate(node.get(key) or []):
                walk(sub, f"{path}[{key}{i}]")

    walk(schema, "config")


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_validate_with_snakemakes_defaults(name):
    config = load(name)
    ours, theirs = copy.deepcopy(config), copy.deepcopy(config)
    validate_config(ours, SCHEMA)
    validate(theirs, schema=str(SCHEMA))
    assert ours == theirs
    assert ours != config  # defaults were filled in


def test_defaults_fill_a_minimal_config_as_snakemake_does():
    config = {"run_name": "t", "seed": 0, "device": "cpu", "models": {"m": {"source": "embedded"}},
              "probe_sets": {"p": "p.json"}, "terrain": {}}
    ours, theirs = copy.deepcopy(config), copy.deepcopy(config)
    validate_config(ours, SCHEMA)
    validate(theirs, schema=str(SCHEMA))
    assert ours == theirs
    assert ours["embedded"]["train"]["steps"] == 600 and ours["terrain"]["enabled"] is True
    assert ours["subspace"] == theirs["subspace"] and ours["subspace"]["enabled"] is False
    # defaults are copies: filling one config leaves the next one's untouched
    again = copy.deepcopy(config)
    ours["embedded"]["train"]["steps"] = 1
    validate_config(again, SCHEMA)
    assert again["embedded"]["train"]["steps"] == 600


def problems(config: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    lines = str(info.value).splitlines()
    assert lines == info.value.lines
    assert 1 <= len(lines) <= MAX_ERRORS + 1 and all(line.startswith("config: ") for line in lines)
    assert all(len(line) < 200 for line in lines)
    return lines


def test_a_misspelt_key_is_named_with_the_closest_key():
    config = load("config.yaml")
    config["search"]["pipline"] = config["search"].pop("pipeline")
    assert problems(config) == ["config: search.pipline: unknown key; did you mean search.pipeline?"]


def test_misspelt_keys_at_several_depths():
    config = load("smoke.yaml")
    config["seeds"] = config.pop("seed")
    config["embedded"]["train"]["step"] = config["embedded"]["train"].pop("steps")
    config["models"]["tiny-qat"]["sorce"] = config["models"]["tiny-qat"].pop("source")
    lines = problems(config)
    assert "config: seeds: unknown key; did you mean seed?" in lines
    assert "config: embedded.train.step: unknown key; did you mean embedded.train.steps?" in lines
    assert "config: models.tiny-qat.sorce: unknown key; did you mean models.tiny-qat.source?" in lines
    assert len(lines) == 3  # the missing keys those suggestions name are not repeated


def test_a_wrong_type_names_the_path_and_the_type():
    config = load("config.yaml")
    config["embedded"] = load("model.yaml")["embedded"]  # the recipe's: training and architecture blocks
    config["search"]["window"] = "abc"
    config["embedded"]["train"]["checkpoint_dir"] = 5
    lines = problems(config)
    assert "config: search.window: expected integer, got string 'abc'" in lines
    assert "config: embedded.train.checkpoint_dir: expected string or null, got integer 5" in lines


def test_values_out_of_range_and_outside_an_enumeration():
    config = load("config.yaml")
    config["embedded"] = load("model.yaml")["embedded"]  # the recipe's: training and architecture blocks
    config["search"]["projections"] = ["ffn_gate", "ffn_upp"]
    config["embedded"]["architecture"]["hidden"] = 100
    config["quality"]["wrong_target_band"] = [0.2]
    lines = problems(config)
    assert ("config: search.projections[1]: 'ffn_upp' is not one of 'ffn_gate', 'ffn_up', 'ffn_down'; "
            "did you mean 'ffn_up'?") in lines
    assert "config: embedded.architecture.hidden: 100 is not >= 128" in lines
    assert "config: quality.wrong_target_band: needs at least 2 items, has 1" in lines


def test_missing_keys_and_alternatives():
    config = load("bonsai-8b.yaml")
    del config["run_name"]
    source = config["models"]["bonsai-8b"]["download"]
    source["url"] = "https://example.org/model.gguf"  # a second source beside hub
    config["downloads"]["allow_unpinned"] = "yes"
    lines = problems(config)
    assert "config: missing required key 'run_name'" in lines
    assert "config: models.bonsai-8b.download: needs exactly one of hub, upstream, url, path, has hub, url" in lines
    assert ("config: downloads.allow_unpinned: 'yes' is not a boolean or one of 'true', 'false', 'True', "
            "'False'") in lines


def test_a_wrong_key_name_and_a_key_ruled_out():
    config = load("config.yaml")
    config["embedded"] = load("model.yaml")["embedded"]  # the recipe's: training and architecture blocks
    config["evaluation"] = {"benchmarks": {"gsm8kk": "datasets/gsm8k.parquet"}}
    config["embedded"]["architecture"]["vocab_size"] = 512
    lines = problems(config)
    assert any(line.startswith("config: evaluation.benchmarks.gsm8kk: key not allowed here") and
               "did you mean 'gsm8k'?" in line for line in lines)
    assert "config: embedded.architecture.vocab_size: not allowed here; set embedded.tokenizer.vocab_size" in lines


def test_many_problems_are_cut_to_a_few_lines():
    config = load("config.yaml")
    for key in list(config["search"])[:9]:
        config["search"][key + "x"] = config["search"].pop(key)
    lines = problems(config)
    assert len(lines) == MAX_ERRORS + 1 and lines[-1].startswith("config: ... and ")


def test_a_block_of_the_wrong_kind():
    config = load("config.yaml")
    config["search"] = 5
    assert problems(config) == ["config: search: expected object, got integer 5"]
