"""Every table the project writes goes through :func:`write_table`: validated against its pandera
schema first, then written by extension (.parquet, .csv, .tsv)."""

from __future__ import annotations

import os
from pathlib import Path

import pandera.polars as pa
import polars as pl


class ProbeScores(pa.DataFrameModel):
    """One row per probe scored on one model (``neagari score``)."""

    name: str
    role: str
    n_prompt_tokens: int = pa.Field(ge=1)
    correct_id: int = pa.Field(ge=0)
    wrong_id: int = pa.Field(ge=0)
    correct_logit: float
    wrong_logit: float
    gap: float
    top1_id: int = pa.Field(ge=0)

    class Config:
        strict = True

    @pa.dataframe_check
    def gap_is_difference(cls, data) -> pl.LazyFrame:
        lf = data.lazyframe
        return lf.select(((pl.col("correct_logit") - pl.col("wrong_logit") - pl.col("gap")).abs() < 1e-4))


class TrainingLoss(pa.DataFrameModel):
    """One row per training step of an embedded model."""

    step: int = pa.Field(ge=1, unique=True)
    phase: str = pa.Field(isin=["copy", "mix"])  # curriculum phase (TrainConfig.copy_steps)
    lr: float = pa.Field(ge=0)
    train_loss: float = pa.Field(ge=0)
    eval_loss: float = pa.Field(ge=0, nullable=True)
    elapsed_s: float = pa.Field(ge=0)
    model: str
    variant: str = pa.Field(isin=["qat", "fp"])


class EvalItems(pa.DataFrameModel):
    """One row per evaluation item: greedy output and exact-match verdict."""

    id: str = pa.Field(unique=True)
    domain: str
    category: str
    answer: str
    output: str
    correct: bool


class VerbatimOutcomes(pa.DataFrameModel):
    """One row per held-out verbatim probe (PAPER.md §6 item 8)."""

    name: str = pa.Field(unique=True)
    domain: str
    output: str
    outcome: str = pa.Field(isin=["PASS", "COPY", "PARTIAL", "OTHER"])


class QualitySummary(pa.DataFrameModel):
    """Per model and domain: exact match on the evaluation set and the share of wrong probes."""

    model: str
    domain: str
    eval_n: int = pa.Field(ge=1, nullable=True)
    eval_accuracy: float = pa.Field(ge=0, le=1, nullable=True)
    probes_n: int = pa.Field(ge=1, nullable=True)
    probes_wrong_share: float = pa.Field(ge=0, le=1, nullable=True)
    heldout_nll: float = pa.Field(ge=0)
    uniform_nll: float = pa.Field(gt=0)


class CopyDiagnostic(pa.DataFrameModel):
    """Per model: next-token NLL on held-out word lists, first occurrence vs repetition."""

    model: str = pa.Field(unique=True)
    lists: int = pa.Field(ge=1)
    first_tokens: int = pa.Field(ge=1)
    repeat_tokens: int = pa.Field(ge=1)
    first_nll: float = pa.Field(ge=0)
    repeat_nll: float = pa.Field(ge=0)

    @pa.dataframe_check
    def same_lists_twice(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("first_tokens") == pl.col("repeat_tokens"))


class SearchIterations(pa.DataFrameModel):
    """One row per search iteration: the move, the verdict, and every probe's gap after it
    (targets first, then controls, in the order of the search's ``probes`` list)."""

    iteration: int = pa.Field(ge=0, unique=True)
    layer: int = pa.Field(ge=0)
    proj: str
    group: int = pa.Field(ge=0)
    move_type: str = pa.Field(isin=["group", "scale"])
    bit: int = pa.Field(ge=0, le=15, nullable=True)
    accepted: bool
    fitness_before: float
    fitness_after: float
    focus: int = pa.Field(ge=0, nullable=True)
    gaps: list[float] = pa.Field(nullable=False)


from neagari.analysis.schemas import AUDIT_SCHEMAS, InterferenceByQuartile, LayerProjectionCounts  # noqa: E402


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
    """Every probe set scored on the models along the five-domain pipeline (and the base)."""

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
    """PAPER.md §5.2 (never audited there): does the calibrated wrong token stay the top rival?"""

    model: str
    stage_model: str
    probe_set: str
    probes: int = pa.Field(ge=1)
    drifted: int = pa.Field(ge=0)
    drift_share: float = pa.Field(ge=0, le=1)
    mean_gap_calibrated: float
    mean_gap_top_wrong: float
    mean_gap_difference: float = pa.Field(ge=-1e-4)


_OUTCOMES = ["PASS", "COPY", "PARTIAL", "OTHER"]


class HeldoutVerbatim(pa.DataFrameModel):
    """PAPER.md §6.8.1: one row per held-out verbatim probe, base and patched output and outcome."""

    name: str = pa.Field(unique=True)
    domain: str
    base_output: str
    patched_output: str
    base_outcome: str = pa.Field(isin=_OUTCOMES)
    patched_outcome: str = pa.Field(isin=_OUTCOMES)


class HeldoutCrosstab(pa.DataFrameModel):
    """Base outcome x patched outcome counts of the held-out verbatim probes (all 16 cells)."""

    model: str
    fitness: str
    base_outcome: str = pa.Field(isin=_OUTCOMES)
    patched_outcome: str = pa.Field(isin=_OUTCOMES)
    count: int = pa.Field(ge=0)

    @pa.dataframe_check
    def one_row_per_cell(cls, data) -> pl.LazyFrame:
        lf = data.lazyframe
        return lf.select(pl.struct("model", "fitness", "base_outcome", "patched_outcome").is_unique())


class HeldoutSummary(pa.DataFrameModel):
    """COPY -> PASS conversion of the held-out verbatim probes, overall (domain "all", which
    carries the pre-registered verdict: generalizes iff rate >= threshold) and per domain."""

    model: str
    fitness: str
    domain: str = pa.Field(unique=True)
    probes: int = pa.Field(ge=0)
    base_copy: int = pa.Field(ge=0)
    converted: int = pa.Field(ge=0)
    rate: float = pa.Field(ge=0, le=1, nullable=True)
    ci_lo: float = pa.Field(ge=0, le=1, nullable=True)
    ci_hi: float = pa.Field(ge=0, le=1, nullable=True)
    base_pass: int = pa.Field(ge=0)
    patched_pass: int = pa.Field(ge=0)
    pass_lost: int = pa.Field(ge=0)
    threshold: float = pa.Field(ge=0, le=1)
    generalizes: bool = pa.Field(nullable=True)

    @pa.dataframe_check
    def converted_within_copy(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("converted") <= pl.col("base_copy"))


class HeldoutGenerations(pa.DataFrameModel):
    """Before/after greedy generations on the optimized (training) verbatim prompts."""

    name: str = pa.Field(unique=True)
    domain: str
    correct: str
    base_output: str
    patched_output: str
    base_starts_correct: bool
    patched_starts_correct: bool


class BenchItems(pa.DataFrameModel):
    """PAPER.md §6.7: one row per evaluation item, greedy llama.cpp output and the verdict of the
    item's scorer (exact match, or the GSM8K / IFEval / MMLU / MuSR scorers of neagari.evaluation.scorers)."""

    id: str = pa.Field(unique=True)
    domain: str
    answer: str
    output: str
    correct: bool
    n_new_tokens: int = pa.Field(ge=0)
    finish: str = pa.Field(isin=["stop", "eog", "length"])


class BenchmarkItemSets(pa.DataFrameModel):
    """One row per benchmark file turned into generation items (neagari.evaluation.benchmark_items.load_items)."""

    benchmark: str = pa.Field(unique=True, isin=["gsm8k", "ifeval", "mmlu", "musr"])
    source: str
    rows: int = pa.Field(ge=1)
    items: int = pa.Field(ge=1)
    skipped_unsupported: int = pa.Field(ge=0)
    max_new_tokens: int = pa.Field(ge=1)


class BenchComparison(pa.DataFrameModel):
    """Base vs patched accuracy per domain and overall ("all"), paired: discordant counts b (base
    wrong, patched right) and c, exact McNemar p, 95% CI of the difference; percentages."""

    model: str
    domain: str = pa.Field(unique=True)
    n: int = pa.Field(ge=1)
    base_correct: int = pa.Field(ge=0)
    patched_correct: int = pa.Field(ge=0)
    base_accuracy_pct: float = pa.Field(ge=0, le=100)
    patched_accuracy_pct: float = pa.Field(ge=0, le=100)
    diff_pp: float = pa.Field(ge=-100, le=100)
    b: int = pa.Field(ge=0)
    c: int = pa.Field(ge=0)
    mcnemar_p: float = pa.Field(ge=0, le=1)
    ci_lo_pp: float
    ci_hi_pp: float

    @pa.dataframe_check
    def difference_is_discordance(cls, data) -> pl.LazyFrame:
        lf = data.lazyframe
        return lf.select(((pl.col("patched_correct") - pl.col("base_correct")) == (pl.col("b") - pl.col("c"))))


class LlamaCrosscheck(pa.DataFrameModel):
    """Greedy answers of the engine and of llama.cpp on one exported model, prompt by prompt."""

    id: str = pa.Field(unique=True)
    domain: str
    tokens_ours: int = pa.Field(ge=0)
    tokens_llama: int = pa.Field(ge=0)
    agree_prefix: int = pa.Field(ge=0)
    # first step whose top-2 margin is a near-tie (neagari.evaluation.agreement), on each side's own path
    first_near_tie_ours: int = pa.Field(ge=0, nullable=True)
    first_near_tie_llama: int = pa.Field(ge=0, nullable=True)
    verdict: str = pa.Field(isin=["identical", "near-tie", "disagree"])
    text_ours: str
    text_llama: str


SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    "llama_crosscheck": LlamaCrosscheck,
    "heldout_verbatim": HeldoutVerbatim, "heldout_crosstab": HeldoutCrosstab,
    "heldout_summary": HeldoutSummary, "heldout_generations": HeldoutGenerations,
    "bench_items": BenchItems, "bench_comparison": BenchComparison, "benchmark_item_sets": BenchmarkItemSets,
    **AUDIT_SCHEMAS, "quartiles_by_run": QuartilesByRun, "layer_projection_by_run": LayerProjectionByRun,
    "fitness_modes": FitnessModes, "random_flip_null": RandomFlipNull, "stage_scores": StageScores,
    "rank2_drift": Rank2Drift,
    "search_iterations": SearchIterations,
    "probe_scores": ProbeScores, "training_loss": TrainingLoss, "eval_items": EvalItems,
    "verbatim_outcomes": VerbatimOutcomes, "quality_summary": QualitySummary, "copy_diagnostic": CopyDiagnostic,
}


def write_table(df: pl.DataFrame, path: str | os.PathLike, schema: str | type[pa.DataFrameModel]) -> Path:
    """Validate ``df`` (raises pandera's SchemaError naming the failing check) and write it."""
    model = SCHEMAS[schema] if isinstance(schema, str) else schema
    model.validate(df)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df.write_parquet(path)
    elif suffix in (".csv", ".tsv"):
        df.write_csv(path, separator="\t" if suffix == ".tsv" else ",")
    else:
        raise ValueError(f"{path}: unknown table extension (use .parquet, .csv or .tsv)")
    return path


def read_table(path: str | os.PathLike) -> pl.DataFrame:
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pl.read_parquet(path)
    return pl.read_csv(path, separator="\t" if path.suffix.lower() == ".tsv" else ",")
