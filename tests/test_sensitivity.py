"""Probe-sampling sensitivity (neagari.analysis.sensitivity, rules/sensitivity.smk): bootstrap
resamples of a search's probes (seeded, with replacement, deterministic names), a run read over its
first iterations, the spread statistics and their comparison on hand numbers, the config keys, the
stage's place in the DAG, and what the smoke workflow writes."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandera.errors
import polars as pl
import pytest
import yaml
from snakemake.utils import validate

from neagari.analysis import sensitivity as sens
from neagari.analysis.schemas import (ProbeResamples, SensitivityComparison, SensitivityRuns, SensitivitySpread)
from neagari.search import split_probes
from neagari.search.probes import Probe, load_probes
from neagari.tables import write_table

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"


def probes(names, role="target"):
    return [Probe(name=n, prompt=f"prompt {n}", correct=" yes", wrong=" no", role=role, correct_id=10 + i,
                  wrong_id=20 + i, base_gap=-0.5 + i, extra={"category": "hand"}) for i, n in enumerate(names)]


# ---------------------------------------------------------------------------- resampling


def test_bootstrap_is_seeded_and_with_replacement():
    def draw(seed, r, n=50):
        return sens.bootstrap_indices(n, sens.resample_rng(seed, r, "target"))

    assert draw(0, 0) == draw(0, 0)  # seeded: the same resample every time
    assert draw(0, 0) != draw(0, 1) and draw(0, 0) != draw(1, 0)  # another index or seed, another draw
    idx = draw(0, 0)
    assert len(idx) == 50 and all(0 <= i < 50 for i in idx)
    assert len(set(idx)) < 50  # with replacement: 50 draws of 50 repeat some (all distinct: p < 1e-20)
    assert sens.bootstrap_indices(0, sens.resample_rng(0, 0, "target")) == []
    # over many draws every probe is drawn about equally often (uniform, 1/n each)
    counts = np.bincount(sens.bootstrap_indices(20000, sens.resample_rng(3, 0, "target")), minlength=20000)
    assert counts.mean() == 1 and 0.3 < (counts == 0).mean() < 0.45  # P(never drawn) -> 1/e


def test_copy_names_hand_checked():
    assert sens.copy_numbers([2, 0, 2, 2, 1]) == [1, 1, 2, 3, 1]
    names = ["a", "b", "c"]
    assert [sens.copy_name(names[i], c) for i, c in zip([2, 0, 2, 2], sens.copy_numbers([2, 0, 2, 2]))] == \
        ["c", "a", "c~2", "c~3"]


def test_resample_hand_checked():
    """Seed 0, resample 0 draws targets [4, 3, 2, 1, 1] of five and controls [2, 1, 0] of three
    (numpy's PCG64 stream): b is drawn twice, a never; the second b runs as b~2."""
    targets, controls = probes("abcde"), probes("xyz", role="controls")
    r = sens.resample_probes(targets, controls, seed=0, index=0)
    assert r.target_indices == (4, 3, 2, 1, 1) and r.control_indices == (2, 1, 0)
    assert [p.name for p in r.targets] == ["e", "d", "c", "b", "b~2"]
    assert [p.name for p in r.controls] == ["z", "y", "x"]
    b2 = r.targets[4]  # a copy is the probe itself under its new name
    assert (b2.prompt, b2.correct_id, b2.wrong_id, b2.base_gap) == ("prompt b", 11, 21, 0.5)
    assert b2.extra == {"category": "hand", "resampled_from": "b"}
    table = sens.resample_table([r, sens.resample_probes(targets, controls, seed=0, index=1)])
    ProbeResamples.validate(table)
    first = table.filter(pl.col("resample") == 0)
    assert first.filter(pl.col("role") == "target").select("source_index", "probe", "copy", "name").rows() == [
        (4, "e", 1, "e"), (3, "d", 1, "d"), (2, "c", 1, "c"), (1, "b", 1, "b"), (1, "b", 2, "b~2")]
    assert first.filter(pl.col("role") == "control")["probe"].to_list() == ["z", "y", "x"]
    assert table.filter(pl.col("resample") == 1).height == 8


def test_target_draws_do_not_depend_on_the_controls():
    targets = probes("abcdefgh")
    one = sens.resample_probes(targets, probes("xyz", "control"), seed=7, index=2)
    other = sens.resample_probes(targets, probes("uvwxyz", "control"), seed=7, index=2)
    assert one.target_indices == other.target_indices and not sens.resample_probes(targets, [], 7, 2).controls
    with pytest.raises(ValueError, match="at least one target"):
        sens.resample_probes([], probes("x"), seed=0, index=0)


def test_resample_file_is_what_the_search_reads(tmp_path):
    """The probe document loads as an ordinary probe file; the search splits it into exactly the
    resample's targets and controls, ids and names kept."""
    targets, controls = probes("abcde"), probes("xyz", role="promoted_controls")
    r = sens.resample_probes(targets, controls, seed=0, index=0)
    path = tmp_path / "r0.json"
    path.write_text(json.dumps(sens.probe_document(r, "editing")))
    got_t, got_c = split_probes(path)
    assert [p.name for p in got_t] == [p.name for p in r.targets]
    assert [p.name for p in got_c] == [p.name for p in r.controls]
    assert [(p.correct_id, p.wrong_id) for p in got_t] == [(14, 24), (13, 23), (12, 22), (11, 21), (11, 21)]
    assert got_t[4].extra["resampled_from"] == "b" and {p.role for p in got_c} == {"control"}
    doc = json.loads(path.read_text())
    assert (doc["domain"], doc["resample"], doc["seed"]) == ("editing", 0, 0)
    no_controls = sens.probe_document(sens.resample_probes(targets, [], 0, 0), "editing")
    assert list(no_controls["probes"]) == ["target"]
    path.write_text(json.dumps(no_controls))
    assert len(load_probes(path)) == 5


# ---------------------------------------------------------------------------- reading a run


def iterations(rows):
    """A SearchIterations-like frame: (iteration, accepted, fitness_before, fitness_after, gaps)."""
    return pl.DataFrame([{"iteration": i, "accepted": a, "fitness_before": fb, "fitness_after": fa, "gaps": g}
                         for i, a, fb, fa, g in rows],
                        schema={"iteration": pl.Int64, "accepted": pl.Boolean, "fitness_before": pl.Float64,
                                "fitness_after": pl.Float64, "gaps": pl.List(pl.Float64)})


# two targets (the first wrong at baseline) and one control
BASE = [-1.0, 0.5, 2.0]
RUN = iterations([
    (0, True, 0.0, 0.1, [-0.5, 0.6, 2.0]),
    (1, False, 0.1, 0.05, [-0.9, 0.4, 2.0]),  # a rejected trial: its gaps are not the state
    (2, True, 0.1, 0.3, [0.2, 0.7, 1.9]),  # the wrong target crosses
    (3, False, 0.3, 0.2, [-0.1, 0.7, 1.9]),
])


def test_run_state_over_the_first_iterations():
    full = sens.run_state(BASE, 2, RUN)
    assert full == {"iterations": 4, "accepted": 2, "rate": 0.5, "targets": 2, "controls": 1, "targets_wrong": 1,
                    "crossings": 1, "fitness": 0.3}
    assert sens.run_state(BASE, 2, RUN, upto=100) == full
    first2 = sens.run_state(BASE, 2, RUN, upto=2)
    assert (first2["iterations"], first2["accepted"], first2["crossings"], first2["fitness"]) == (2, 1, 0, 0.1)
    nothing = sens.run_state(BASE, 2, RUN, upto=0)
    assert (nothing["iterations"], nothing["rate"], nothing["crossings"], nothing["fitness"]) == (0, None, 0, None)
    # nothing kept: the base state, and the base fitness the first iteration was judged against
    rejected = iterations([(0, False, -0.2, -0.4, [5.0, 5.0, 5.0]), (1, False, -0.2, -0.3, [5.0, 5.0, 5.0])])
    state = sens.run_state(BASE, 2, rejected)
    assert (state["accepted"], state["rate"], state["crossings"], state["fitness"]) == (0, 0.0, 0, -0.2)
    assert sens.run_state(BASE, 2, RUN.reverse(), upto=2) == first2  # read in iteration order


def test_run_rows_and_their_schema():
    summary = {"base_gaps": BASE, "n_targets": 2, "config": {"seed": 3, "lam": 1.5}}
    rows = [sens.run_row("original", "pass1/editing", summary, RUN, 4),
            sens.run_row("resample", "sensitivity/editing-r0", summary, RUN, 4, resample=0),
            sens.run_row("seed", "nullbase/trained-s3", summary, RUN, 2)]
    table = sens.runs_table(rows)
    SensitivityRuns.validate(table)
    assert table.select("kind", "seed", "lam", "iterations", "crossings").rows() == [
        ("original", 3, 1.5, 4, 1), ("resample", 3, 1.5, 4, 1), ("seed", 3, 1.5, 2, 0)]
    bad = table.with_columns(pl.lit(2).alias("crossings"))  # more crossings than wrong targets
    with pytest.raises(pandera.errors.SchemaError):
        SensitivityRuns.validate(bad)


# ---------------------------------------------------------------------------- spread, by hand


def test_spread_on_hand_numbers():
    s = sens.spread([1, 2, 3, 4])
    assert (s["runs"], s["mean"], s["min"], s["max"]) == (4, 2.5, 1.0, 4.0)
    assert s["sd"] == pytest.approx(math.sqrt(5 / 3))  # squares 2.25 + 0.25 + 0.25 + 2.25 over n - 1 = 3
    # 2.5th / 97.5th percentiles, linear: positions 0.075 and 2.925 of 0..3
    assert (s["ci_lo"], s["ci_hi"]) == (pytest.approx(1.075), pytest.approx(3.925))
    assert sens.spread([4, None, float("nan"), 1, 3, 2]) == s  # missing values left out, order irrelevant
    one = sens.spread([0.25])
    assert (one["runs"], one["mean"], one["sd"], one["ci_lo"], one["ci_hi"]) == (1, 0.25, None, 0.25, 0.25)
    assert sens.spread([]) == {"runs": 0, "mean": None, "sd": None, "min": None, "max": None, "ci_lo": None,
                               "ci_hi": None}
    ten = sens.spread(range(10))  # 0..9: positions 0.225 and 8.775
    assert (ten["ci_lo"], ten["ci_hi"]) == (pytest.approx(0.225), pytest.approx(8.775))


def test_compare_spread_rule():
    assert sens.compare_spread(0.3, 0.1) == (pytest.approx(3.0), "more")
    assert sens.compare_spread(0.1, 0.3) == (pytest.approx(1 / 3), "less")
    assert sens.compare_spread(0.15, 0.1) == (pytest.approx(1.5), "comparable")
    assert sens.compare_spread(0.2, 0.1)[1] == "comparable"  # exactly the factor: not beyond it
    assert sens.compare_spread(0.0, 0.0) == (None, "comparable")
    assert sens.compare_spread(0.1, 0.0) == (None, "more")
    assert sens.compare_spread(0.1, None) == (None, "undetermined")
    assert sens.compare_spread(None, 0.1) == (None, "undetermined")


def hand_runs():
    """Three resamples, three seeds: rates spread wider over the resamples (SD 0.1 against 0.01),
    crossings alike over the resamples (SD 0 against 1), fitness equally spread (SD 0.01 each)."""
    rows = [{"kind": "original", "run": "pass1/editing", "seed": 0, "iterations": 10, "accepted": 5, "rate": 0.5,
             "targets": 4, "controls": 2, "targets_wrong": 2, "crossings": 1, "fitness": 0.2}]
    for i, (rate, cross, fit) in enumerate([(0.4, 1, 0.19), (0.5, 1, 0.2), (0.6, 1, 0.21)]):
        rows.append({**rows[0], "kind": "resample", "run": f"sensitivity/editing-r{i}", "resample": i,
                     "accepted": round(rate * 10), "rate": rate, "crossings": cross, "fitness": fit})
    for s, (rate, cross, fit) in enumerate([(0.49, 0, 0.3), (0.5, 1, 0.31), (0.51, 2, 0.32)]):
        rows.append({**rows[0], "kind": "seed", "run": f"nullbase/trained-s{s}", "seed": s, "rate": rate,
                     "accepted": 5, "crossings": cross, "fitness": fit})
    return sens.runs_table(rows)


def test_spread_and_comparison_tables(tmp_path):
    runs = hand_runs()
    spreads = sens.spread_table(runs)
    write_table(spreads, tmp_path / "spread.parquet", SensitivitySpread)
    row = {(r["metric"], r["source"]): r for r in spreads.to_dicts()}
    assert row[("rate", "resamples")]["runs"] == 3 and row[("rate", "resamples")]["mean"] == pytest.approx(0.5)
    assert row[("rate", "resamples")]["sd"] == pytest.approx(0.1)
    assert row[("rate", "seeds")]["sd"] == pytest.approx(0.01)
    assert row[("crossings", "seeds")]["sd"] == pytest.approx(1.0) and row[("crossings", "resamples")]["sd"] == 0
    assert (row[("fitness", "seeds")]["min"], row[("fitness", "seeds")]["max"]) == (0.3, 0.32)
    assert row[("rate", "resamples")]["ci_lo"] == pytest.approx(0.405)  # 0.4 + 0.05 * 0.1
    comparison = sens.comparison_table(spreads)
    write_table(comparison, tmp_path / "comparison.parquet", SensitivityComparison)
    verdicts = dict(comparison.select("metric", "spread").rows())
    assert verdicts == {"rate": "more", "crossings": "less", "fitness": "comparable"}
    ratios = dict(comparison.select("metric", "sd_ratio").rows())
    assert ratios["rate"] == pytest.approx(10.0) and ratios["crossings"] == 0.0
    assert ratios["fitness"] == pytest.approx(1.0)
    assert sens.overall_spread(verdicts.values()) == "mixed"
    # one seed: no seed SD, nothing decided
    single = runs.filter((pl.col("kind") != "seed") | (pl.col("seed") == 0))
    one = sens.comparison_table(sens.spread_table(single))
    assert set(one["spread"]) == {"undetermined"} and set(one["seeds"]) == {1}
    assert sens.overall_spread(one["spread"]) == "undetermined"


def test_overall_spread():
    assert sens.overall_spread(["more", "comparable", "undetermined"]) == "more"
    assert sens.overall_spread(["less", "less"]) == "less"
    assert sens.overall_spread(["comparable", "comparable"]) == "comparable"
    assert sens.overall_spread(["more", "less"]) == "mixed"
    assert sens.overall_spread([]) == "undetermined"


def test_spread_schema_keeps_the_interval_inside_the_range():
    spreads = sens.spread_table(hand_runs())
    SensitivitySpread.validate(spreads)
    bad = spreads.with_columns(pl.when(pl.col("runs") > 0).then(pl.col("max") + 1).otherwise(None).alias("ci_hi"))
    with pytest.raises(pandera.errors.SchemaError):
        SensitivitySpread.validate(bad)


# ---------------------------------------------------------------------------- config


def config(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_config_keys_and_defaults():
    default, smoke = config("config.yaml"), config("smoke.yaml")
    assert default["search"]["sensitivity"]["resamples"] >= 10
    assert 2 <= smoke["search"]["sensitivity"]["resamples"] <= 3
    for c in (default, smoke):
        validate(c, schema=str(SCHEMA))
        assert c["search"]["sensitivity"]["enabled"] is True
    # a search block without the key validates, the stage off; an empty block runs it with the defaults
    off = config("smoke.yaml")
    del off["search"]["sensitivity"]
    validate(off, schema=str(SCHEMA))
    assert off["search"]["sensitivity"] == {"enabled": False, "resamples": 10}
    on = config("smoke.yaml")
    on["search"]["sensitivity"] = {}
    validate(on, schema=str(SCHEMA))
    assert on["search"]["sensitivity"] == {"enabled": True, "resamples": 10}
    for paper in ("bonsai-8b.yaml", "bonsai-1.7b.yaml"):  # off at paper scale: ten more 1000-iteration searches
        c = config(paper)
        validate(c, schema=str(SCHEMA))
        assert c["search"]["sensitivity"]["enabled"] is False


# ---------------------------------------------------------------------------- the DAG


def snakemake(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)


def job_counts(stdout: str) -> dict[str, int]:
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stdout, re.M)}


@pytest.mark.slow
def test_smoke_dry_run_lays_out_the_stage(tmp_path):
    """The smoke config's stage: one resampling job, one search per resample, one summary, reading
    the pass-1 run and the null baseline's trained searches rather than running more of them."""
    res = snakemake("-n", "results/sensitivity/tiny-qat/math.comparison.parquet", "--configfile",
                    str(REPO / "config/smoke.yaml"), "--directory", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = job_counts(res.stdout)
    assert (jobs["resample_probes"], jobs["sensitivity_search"], jobs["sensitivity_summary"]) == (1, 2, 1)
    assert jobs["search"] == 2  # pass1/math and the null baseline's trained seed, both read
    assert "results/sensitivity/tiny-qat/math-r1/summary.json" in res.stdout
    bad = snakemake("-n", "--configfile", str(REPO / "config/smoke.yaml"), "--directory", str(tmp_path),
                    "--config", "search={'sensitivity': {'domain': 'coding'}}", cwd=tmp_path)
    assert bad.returncode != 0
    message = "config: search.sensitivity.domain: 'coding' is not a domain of search.pipeline.order"
    assert message in bad.stdout + bad.stderr  # Snakemake prints a parse error on stdout


# ---------------------------------------------------------------------------- the smoke run


@pytest.mark.slow
def test_smoke_run_writes_the_stage(smoke_run):
    out = smoke_run / "results/sensitivity/tiny-qat"
    resamples = pl.read_parquet(out / "math.resamples.parquet")
    runs = pl.read_parquet(out / "math.runs.parquet")
    ProbeResamples.validate(resamples)
    SensitivityRuns.validate(runs)
    SensitivitySpread.validate(pl.read_parquet(out / "math.spread.parquet"))
    comparison = pl.read_parquet(out / "math.comparison.parquet")
    SensitivityComparison.validate(comparison)
    assert runs["kind"].to_list() == ["original", "resample", "resample", "seed"]
    original = json.loads((smoke_run / "results/search/tiny-qat/pass1/math/summary.json").read_text())
    for i in (0, 1):
        run = out / f"math-r{i}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["label"] == f"tiny-qat/sensitivity/math-r{i}"
        assert summary["config"] == original["config"]  # only the probes differ
        assert summary["base_sha256"] == original["base_sha256"]
        drawn = resamples.filter(pl.col("resample") == i)
        targets, controls = split_probes(run / "probes.json")
        assert [p.name for p in targets] == drawn.filter(pl.col("role") == "target")["name"].to_list()
        assert [p.name for p in controls] == drawn.filter(pl.col("role") == "control")["name"].to_list()
        assert (len(targets), len(controls)) == (original["n_targets"], original["n_controls"])
        # each drawn probe is the pass-1 search's probe at its index: the same targets and controls
        names = [q["name"] for q in original["probes"]]
        source = {"target": names[:original["n_targets"]], "control": names[original["n_targets"]:]}
        assert [source[role][k] for role, k in drawn.select("role", "source_index").rows()] == drawn["probe"].to_list()
        assert [p["name"] for p in summary["probes"]] == [p.name for p in targets + controls]
    # the seed side is the null baseline's own search, read: with seed 0, the same λ and probes as
    # pass-1 math, its iterations are pass-1 math's first ones
    seed = runs.filter(pl.col("kind") == "seed").row(0, named=True)
    assert seed["run"] == "nullbase/trained-s0"
    first = sens.run_state(original["base_gaps"], original["n_targets"],
                           pl.read_parquet(smoke_run / "results/search/tiny-qat/pass1/math/iterations.parquet"),
                           upto=seed["iterations"])
    assert {k: seed[k] for k in first} == first
    assert set(comparison["spread"]) == {"undetermined"}  # the smoke config runs one null-baseline seed
    paper = (smoke_run / "results/paper/paper.md").read_text()
    assert "## Probe-sampling sensitivity (§8)" in paper
    assert "**Probe-sampling sensitivity (§8).** Inconclusive at this scale" in paper


# ---------------------------------------------------------------------------- the paper


def test_paper_facts_and_table(tmp_path):
    from neagari.report import facts
    from neagari.report.paper import table_markdown

    runs = hand_runs()
    spreads = sens.spread_table(runs)
    files = {"domain": "editing", "seed": 0}
    for name, df, schema in (("runs", runs, SensitivityRuns), ("spread", spreads, SensitivitySpread),
                             ("comparison", sens.comparison_table(spreads), SensitivityComparison),
                             ("resamples", sens.resample_table([sens.resample_probes(probes("ab"), [], 0, 0)]),
                              ProbeResamples)):
        files[name] = str(write_table(df, tmp_path / f"editing.{name}.parquet", schema))
    tables = {}
    s = facts.sensitivity_section(files, tables)
    assert (s["resamples"], s["seeds"], s["seed_list"], s["overall"]) == (3, 3, [0, 1, 2], "mixed")
    assert s["by_verdict"]["more"] == ["acceptance rate"] and s["by_verdict"]["less"] == ["target crossings"]
    assert s["spread"]["rate"]["resamples"]["sd"] == pytest.approx(0.1) and s["original"]["run"] == "pass1/editing"
    md = table_markdown(tables["sensitivity"])
    assert "| acceptance rate (%) | probe resamples | 3 | 50 | 10 |" in md  # rates shown in percent
    assert "| target crossings | seeds | 3 | 1 | 1 | 0 | 2 |" in md
    assert facts.sensitivity_section(None, tables) is None
    assert facts.open_questions({**_open_facts(), "sensitivity": s})["sensitivity"]["status"] == "measured"
    assert facts.open_questions(_open_facts())["sensitivity"]["status"] == "not_measured"
    undecided = {**s, "overall": "undetermined"}
    assert facts.open_questions({**_open_facts(), "sensitivity": undecided})["sensitivity"]["status"] == "inconclusive"


def _open_facts():
    """The facts open_questions reads, every other question not measured."""
    return {"overlap": [], "random_flip": [], "rank2_max": None, "quartiles_pass2": [], "fitness_modes": [],
            "null": {"passed": True, "trained_seeds": 1, "trained_iterations": 10, "gap_pp": 20.0, "threshold_pp": 10.0,
                     "trained_rate_sd": None, "null_rate_sd": None, "intervals_disjoint": True}}
