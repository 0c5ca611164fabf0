"""The fidelity table: each entry names a real config key, each config's choice follows from its
values, and the README's table is the one the configs give."""

from __future__ import annotations

from pathlib import Path

import pytest

from neagari.report import fidelity

REPO = Path(__file__).resolve().parents[1]
README_CONFIGS = ["config/config.yaml", "config/bonsai-8b.yaml", "config/bonsai-1.7b.yaml"]


def test_every_key_is_a_key_of_the_default_config():
    config = fidelity.config_file(REPO / "config/config.yaml")
    for e in fidelity.load():
        if e["key"]:
            key = e["key"] if fidelity.lookup(config, e["key"]) is not None else e.get("default_from")
            assert key and fidelity.lookup(config, key) is not None, e["key"]


@pytest.mark.parametrize("value, want", [
    (["borderline", "focused"], "paper's code"),
    (["borderline", "borderline_saturating"], "both"),
    (["focused", "borderline_saturating"], "alternative"),
    (["focused"], "not run"),
    ([], "not run"),
])
def test_a_list_key_holds_the_papers_value(value, want):
    entry = {"key": "search.targeted.fitnesses", "paper_value": "borderline", "alternative_value": "borderline_saturating"}
    assert fidelity.choice(entry, {"search": {"targeted": {"fitnesses": value}}}) == want


def test_a_scalar_key_and_an_absent_block():
    entry = {"key": "search.group_sampling", "paper_value": ["scale", "uniform"]}
    assert fidelity.choice(entry, {"search": {"group_sampling": "uniform"}}) == "paper's code"
    assert fidelity.choice(entry, {"search": {"group_sampling": "scale_base"}}) == "alternative"
    assert fidelity.choice(entry, {}) == "not run"
    assert fidelity.choice({"key": None}, {}) == "paper's code"


def test_an_order_compares_as_a_whole_and_falls_back_to_its_default():
    entry = {"key": "search.scale_pass.order", "paper_value": ["b", "a"], "compare": "exact",
             "default_from": "search.pipeline.order", "enabled_by": "search.scale_pass.enabled"}
    on = {"enabled": True}
    assert fidelity.choice(entry, {"search": {"scale_pass": {**on, "order": ["b", "a"]}}}) == "paper's code"
    assert fidelity.choice(entry, {"search": {"scale_pass": {**on, "order": ["a", "b"]}}}) == "alternative"
    assert fidelity.choice(entry, {"search": {"scale_pass": on, "pipeline": {"order": ["b", "a"]}}}) == "paper's code"
    assert fidelity.choice(entry, {"search": {"scale_pass": on, "pipeline": {"order": ["a", "b"]}}}) == "alternative"
    assert fidelity.choice(entry, {"search": {"scale_pass": {"enabled": False, "order": ["b", "a"]}}}) == "not run"


def test_an_entry_without_its_papers_value_is_refused(tmp_path):
    bad = tmp_path / "f.yaml"
    bad.write_text("- {topic: t, paper: p, alternative: a, key: search.window, why: w}\n")
    with pytest.raises(ValueError, match="lacks paper_value"):
        fidelity.load(bad)


def test_the_readme_table_is_the_configs():
    configs = {f"`{Path(p).name}`": fidelity.config_file(REPO / p) for p in README_CONFIGS}
    table = fidelity.markdown(fidelity.table_rows(fidelity.load(), configs))
    assert table in (REPO / "README.md").read_text(), (
        "README's fidelity table is stale: regenerate it with "
        f"`python -m neagari.report.fidelity {' '.join(README_CONFIGS)}`")
