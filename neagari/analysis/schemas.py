"""pandera models of the audit tables: those :mod:`neagari.analysis.audits` returns (pass the class to
``tables.write_table(df, path, AcceptanceTable)``), their stacks over the pipeline's runs, and the
tables of the fitness modes, the random-flip null and the stage models' scores.

Units: gaps and deltas in logits, rates and shares as fractions, ``pct_*`` and ``*_pp`` percent.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

_RATE = {"ge": 0.0, "le": 1.0}


class BoundaryCrossingFlips(pa.DataFrameModel):
    """One row per accepted flip of one or more patches (§7.6)."""

    patch: str
    flip: int = pa.Field(ge=0)  # position in the patch's flip list
    iteration: int = pa.Field(ge=0, nullable=True)
    layer: int = pa.Field(ge=0)
    proj: str
    group: int = pa.Field(ge=0)
    move_type: str = pa.Field(isin=["group", "scale", "negate", "zero_plus", "zero_minus"])  # Q1_0, Q2_0 moves
    n_targets: int = pa.Field(ge=0)
    n_fixes: int = pa.Field(ge=0)
    n_breaks: int = pa.Field(ge=0)
    n_controls: int = pa.Field(ge=0)
    n_control_fixes: int = pa.Field(ge=0)
    n_control_breaks: int = pa.Field(ge=0)
    mean_delta: float = pa.Field(nullable=True)
    mean_abs_delta: float = pa.Field(ge=0, nullable=True)
    control_mean_delta: float = pa.Field(nullable=True)
    control_mean_abs_delta: float = pa.Field(ge=0, nullable=True)
    changes_target_sign: bool

    class Config:
        strict = True

    @pa.dataframe_check
    def crossings_within_counts(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("n_fixes") + pl.col("n_breaks") <= pl.col("n_targets"))
            & (pl.col("n_control_fixes") + pl.col("n_control_breaks") <= pl.col("n_controls"))
            & (pl.col("changes_target_sign") == (pl.col("n_fixes") + pl.col("n_breaks") > 0)))


class BoundaryCrossingSummary(pa.DataFrameModel):
    """One row per patch (plus ``all`` when pooled): crossings and distance to the boundary.

    Wrong probes are keyed by name (``n_wrong_probes``: the paper's and upstream notebook's
    count); ``n_wrong_listed`` counts wrong targets by position (null in a pooled row over first
    appearances). Distances are |gap| at the start: the median is the paper's statistic (§7.6),
    the mean the notebook's; each ``*_distance_ratio`` is that distance / |mean_delta|.
    """

    patch: str = pa.Field(unique=True)
    flips: int = pa.Field(ge=0)  # 0: the search kept no move (nothing else is known then)
    flips_changing_any_target_sign: int = pa.Field(ge=0)
    flips_changing_any_control_sign: int = pa.Field(ge=0)
    total_fixes: int = pa.Field(ge=0)
    total_breaks: int = pa.Field(ge=0)
    mean_delta: float = pa.Field(nullable=True)
    mean_abs_delta: float = pa.Field(ge=0, nullable=True)
    n_wrong_probes: int = pa.Field(ge=0, nullable=True)
    n_wrong_listed: int = pa.Field(ge=0, nullable=True)
    median_wrong_distance: float = pa.Field(ge=0, nullable=True)
    mean_wrong_distance: float = pa.Field(ge=0, nullable=True)
    median_distance_ratio: float = pa.Field(ge=0, nullable=True)
    mean_distance_ratio: float = pa.Field(ge=0, nullable=True)
    nearest_wrong_index: int = pa.Field(ge=0, nullable=True)
    nearest_wrong_name: str = pa.Field(nullable=True)
    nearest_wrong_start: float = pa.Field(le=0, nullable=True)
    nearest_wrong_mean_delta: float = pa.Field(nullable=True)
    nearest_wrong_end: float = pa.Field(nullable=True)

    class Config:
        strict = True

    @pa.dataframe_check
    def sign_changes_within_flips(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("flips_changing_any_target_sign") <= pl.col("flips"))

    @pa.dataframe_check
    def names_collapse_positions(cls, data) -> pl.LazyFrame:
        # keying by name can only merge listed positions, never add probes
        return data.lazyframe.select((pl.col("n_wrong_probes") <= pl.col("n_wrong_listed")).fill_null(True))


class AcceptanceTable(pa.DataFrameModel):
    """One row per search run (§7.1); ``rate_at_<c>`` columns per checkpoint c."""

    run: str = pa.Field(unique=True)
    iterations: int = pa.Field(ge=0)
    accepted: int = pa.Field(ge=0)
    rate: float = pa.Field(**_RATE, nullable=True)
    rate_at: float = pa.Field(alias=r"^rate_at_\d+$", regex=True, nullable=True, **_RATE)
    rolling_final: float = pa.Field(**_RATE, nullable=True)

    class Config:
        strict = True

    @pa.dataframe_check
    def accepted_within_iterations(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("accepted") <= pl.col("iterations"))


class InterferenceByQuartile(pa.DataFrameModel):
    """Per iteration quartile (and move type) of one run (§7.4)."""

    quartile: int = pa.Field(isin=[1, 2, 3, 4])
    iter_lo: int = pa.Field(ge=0)
    iter_hi: int = pa.Field(ge=0)
    move_type: str = pa.Field(isin=["all", "weight", "scale"])
    flips: int = pa.Field(ge=0)
    mean_target_improvement: float = pa.Field(nullable=True)
    mean_abs_control_disturbance: float = pa.Field(ge=0, nullable=True)
    pct_controls_improved: float = pa.Field(ge=0, le=100, nullable=True)

    class Config:
        strict = True


class InterferenceMatrix(pa.DataFrameModel):
    """Mean gap change per (patch domain, probe domain) (§6.6)."""

    patch_domain: str
    probe_domain: str
    n_probes: int = pa.Field(ge=1)
    mean_delta: float = pa.Field(nullable=True)
    n_fixed: int = pa.Field(ge=0)
    n_broken: int = pa.Field(ge=0)

    class Config:
        strict = True
        unique = ["patch_domain", "probe_domain"]


class MoveTypeShare(pa.DataFrameModel):
    """Scale vs weight flips per domain (§7.5)."""

    domain: str = pa.Field(unique=True)
    flips: int = pa.Field(ge=0)
    weight_flips: int = pa.Field(ge=0)
    scale_flips: int = pa.Field(ge=0)
    scale_share: float = pa.Field(**_RATE, nullable=True)

    class Config:
        strict = True

    @pa.dataframe_check
    def parts_add_up(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("weight_flips") + pl.col("scale_flips") == pl.col("flips"))


class LayerProjectionCounts(pa.DataFrameModel):
    """Flips per (layer, projection) of one patch, for heatmaps."""

    layer: int = pa.Field(ge=0)
    proj: str
    flips: int = pa.Field(ge=1)
    distinct_groups: int = pa.Field(ge=1)

    class Config:
        strict = True
        unique = ["layer", "proj"]


class GroupOverlap(pa.DataFrameModel):
    """Shared (tensor, group) pairs per pair of domains, against chance (§7.3)."""

    domain_a: str
    domain_b: str
    groups_a: int = pa.Field(ge=0)
    groups_b: int = pa.Field(ge=0)
    shared: int = pa.Field(ge=0)
    jaccard: float = pa.Field(**_RATE, nullable=True)
    expected_shared: float = pa.Field(ge=0)
    overlap_ratio: float = pa.Field(ge=0, nullable=True)

    class Config:
        strict = True
        unique = ["domain_a", "domain_b"]


class NullBaselineTable(pa.DataFrameModel):
    """Acceptance per (model, seed) with its Wilson 95% interval (§7.1.1)."""

    model: str
    seed: int
    accepted: int = pa.Field(ge=0)
    iterations: int = pa.Field(ge=1)
    rate: float = pa.Field(**_RATE)
    ci_lo: float = pa.Field(**_RATE)
    ci_hi: float = pa.Field(**_RATE)

    class Config:
        strict = True
        unique = ["model", "seed"]

    @pa.dataframe_check
    def interval_brackets_rate(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("ci_lo") <= pl.col("rate")) & (pl.col("rate") <= pl.col("ci_hi")))


class NullBaselineVerdict(pa.DataFrameModel):
    """The pre-registered trained-vs-randomized test, seeds pooled (§7.1.1); one row."""

    trained_model: str
    trained_seeds: int = pa.Field(ge=1)
    trained_accepted: int = pa.Field(ge=0)
    trained_iterations: int = pa.Field(ge=1)
    trained_rate_sd: float = pa.Field(ge=0, nullable=True)
    trained_rate: float = pa.Field(**_RATE)
    trained_ci_lo: float = pa.Field(**_RATE)
    trained_ci_hi: float = pa.Field(**_RATE)
    null_model: str
    null_seeds: int = pa.Field(ge=1)
    null_accepted: int = pa.Field(ge=0)
    null_iterations: int = pa.Field(ge=1)
    null_rate_sd: float = pa.Field(ge=0, nullable=True)
    null_rate: float = pa.Field(**_RATE)
    null_ci_lo: float = pa.Field(**_RATE)
    null_ci_hi: float = pa.Field(**_RATE)
    gap_pp: float = pa.Field(ge=-100, le=100)
    threshold_pp: float
    gap_meets_threshold: bool
    intervals_disjoint: bool
    passed: bool

    class Config:
        strict = True

    @pa.dataframe_check
    def passed_is_both(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("passed") == (pl.col("gap_meets_threshold") & pl.col("intervals_disjoint")))


class QuartilesByRun(InterferenceByQuartile):
    """Per-flip interference by iteration quartile, for every pipeline run (stage, domain)."""

    stage: str
    domain: str

    class Config:
        strict = True
        unique = ["stage", "domain", "quartile", "move_type"]


class LayerProjectionByRun(LayerProjectionCounts):
    """Accepted moves per layer and projection, for every pipeline run (stage, domain)."""

    stage: str
    domain: str

    class Config:
        strict = True
        unique = ["stage", "domain", "layer", "proj"]


class FitnessModes(pa.DataFrameModel):
    """PAPER.md §6.8 table: one row per targeted run (fitness function)."""

    model: str
    fitness: str = pa.Field(unique=True)
    iterations: int = pa.Field(ge=0)
    accepted: int = pa.Field(ge=0)
    rate: float = pa.Field(ge=0, le=1)
    first_crossing: int = pa.Field(ge=0, nullable=True)
    second_crossing: int = pa.Field(ge=0, nullable=True)
    crossings: int = pa.Field(ge=0)
    targets_wrong_at_start: int = pa.Field(ge=0)
    controls: int = pa.Field(ge=0)
    controls_broken: int = pa.Field(ge=0)
    broken_control_baselines: str


class RandomFlipNull(pa.DataFrameModel):
    """A real pass-1 patch against the same number of random flips kept regardless of fitness."""

    model: str
    domain: str
    kind: str = pa.Field(isin=["search", "random"])
    flips: int = pa.Field(ge=0)
    mean_target_delta: float
    targets_fixed: int = pa.Field(ge=0)
    targets_broken: int = pa.Field(ge=0)
    mean_control_delta: float
    controls_broken: int = pa.Field(ge=0)


class StageScores(pa.DataFrameModel):
    """One row per probe of each probe set, scored on one model along the five-domain pipeline (or the base)."""

    model: str
    stage_model: str
    step: int = pa.Field(ge=0)
    probe_set: str
    name: str
    gap: float
    calibrated_wrong_id: int = pa.Field(ge=0)
    top_wrong_id: int = pa.Field(ge=0)
    gap_vs_top_wrong: float


class Rank2Drift(pa.DataFrameModel):
    """One row per stage model and probe set: does the calibrated wrong token stay the top rival (§5.2)?"""

    model: str
    stage_model: str
    probe_set: str
    probes: int = pa.Field(ge=1)
    drifted: int = pa.Field(ge=0)
    drift_share: float = pa.Field(ge=0, le=1)
    mean_gap_calibrated: float
    mean_gap_top_wrong: float
    mean_gap_difference: float = pa.Field(ge=-1e-4)


# ---------------------------------------------------------------------------- probe-sampling sensitivity
# neagari.analysis.sensitivity: a pass-1 search rerun on bootstrap resamples of its probe sets.

SENSITIVITY_METRICS = ["rate", "crossings", "fitness"]
_TOLERANCE = 1e-9  # percentiles are interpolated: they may stray from min/max by a rounding


class ProbeResamples(pa.DataFrameModel):
    """One row per probe of each bootstrap resample: the original probe it copies (its index in the
    search's target or control list) and the name it runs under (``name~k`` for its k-th copy)."""

    resample: int = pa.Field(ge=0)
    role: str = pa.Field(isin=["target", "control"])
    position: int = pa.Field(ge=0)
    source_index: int = pa.Field(ge=0)
    probe: str
    copy: int = pa.Field(ge=1)
    name: str

    class Config:
        strict = True
        unique = ["resample", "role", "position"]


class SensitivityRuns(pa.DataFrameModel):
    """One row per search read: the original pass-1 run, each resample's run, each null-baseline
    trained seed; all read over the same first iterations (the pass-1 budget)."""

    kind: str = pa.Field(isin=["original", "resample", "seed"])
    run: str = pa.Field(unique=True)
    resample: int = pa.Field(ge=0, nullable=True)
    seed: int = pa.Field(ge=0)
    lam: float = pa.Field(ge=0, nullable=True)
    iterations: int = pa.Field(ge=0)
    accepted: int = pa.Field(ge=0)
    rate: float = pa.Field(**_RATE, nullable=True)
    targets: int = pa.Field(ge=1)
    controls: int = pa.Field(ge=0)
    targets_wrong: int = pa.Field(ge=0)
    crossings: int = pa.Field(ge=0)
    fitness: float = pa.Field(nullable=True)

    class Config:
        strict = True

    @pa.dataframe_check
    def counts_nest(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("accepted") <= pl.col("iterations"))
                                     & (pl.col("crossings") <= pl.col("targets_wrong"))
                                     & (pl.col("targets_wrong") <= pl.col("targets")))


class SensitivitySpread(pa.DataFrameModel):
    """Spread of each metric over the resamples and over the seeds: mean, sample SD, range and
    the 95% percentile interval (null where there are no runs; SD null under two)."""

    metric: str = pa.Field(isin=SENSITIVITY_METRICS)
    source: str = pa.Field(isin=["resamples", "seeds"])
    runs: int = pa.Field(ge=0)
    mean: float = pa.Field(nullable=True)
    sd: float = pa.Field(ge=0, nullable=True)
    min: float = pa.Field(nullable=True)
    max: float = pa.Field(nullable=True)
    ci_lo: float = pa.Field(nullable=True)
    ci_hi: float = pa.Field(nullable=True)

    class Config:
        strict = True
        unique = ["metric", "source"]

    @pa.dataframe_check
    def interval_inside_range(cls, data) -> pl.LazyFrame:
        inside = ((pl.col("ci_lo") >= pl.col("min") - _TOLERANCE) & (pl.col("ci_lo") <= pl.col("ci_hi"))
                  & (pl.col("ci_hi") <= pl.col("max") + _TOLERANCE))
        return data.lazyframe.select((pl.col("runs") == 0) | inside.fill_null(False))


class SensitivityComparison(pa.DataFrameModel):
    """Per metric: the resamples' SD against the seeds' SD and what it says (``more``: probe
    sampling spreads the metric more than the seed does; ``undetermined``: fewer than two runs a side)."""

    metric: str = pa.Field(isin=SENSITIVITY_METRICS, unique=True)
    resamples: int = pa.Field(ge=0)
    seeds: int = pa.Field(ge=0)
    resample_sd: float = pa.Field(ge=0, nullable=True)
    seed_sd: float = pa.Field(ge=0, nullable=True)
    sd_ratio: float = pa.Field(ge=0, nullable=True)
    spread: str = pa.Field(isin=["more", "less", "comparable", "undetermined"])

    class Config:
        strict = True
