"""pandera models of the evaluation tables: the embedded models' quality (evaluation items, verbatim
outcomes, copy diagnostic, summary), the held-out verbatim probes, the benchmark items and their
paired comparison, and the cross-check against llama.cpp. Rates are fractions, ``*_pct`` and
``*_pp`` percent."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

_OUTCOMES = ["PASS", "COPY", "PARTIAL", "OTHER"]


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
    outcome: str = pa.Field(isin=_OUTCOMES)


class QualitySummary(pa.DataFrameModel):
    """Per model and domain: exact match on the evaluation set and the share of wrong probes."""

    model: str
    domain: str
    eval_n: int = pa.Field(ge=1, nullable=True)
    eval_accuracy: float = pa.Field(ge=0, le=1, nullable=True)
    eval_chance: float = pa.Field(ge=0, le=1, nullable=True)  # a blind guesser's exact match
    probes_n: int = pa.Field(ge=1, nullable=True)
    probes_wrong_share: float = pa.Field(ge=0, le=1, nullable=True)
    heldout_nll: float = pa.Field(ge=0)
    uniform_nll: float = pa.Field(gt=0)


class QualityBars(pa.DataFrameModel):
    """Per model and requirement of `neagari.evaluation.quality.Bars`: measured, bar, met."""

    model: str
    requirement: str
    subject: str
    measured: str
    bar: str
    met: bool


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


class BenchmarkItemSets(pa.DataFrameModel):
    """One row per benchmark file turned into generation items (neagari.evaluation.benchmark_items.load_items)."""

    benchmark: str = pa.Field(unique=True, isin=["gsm8k", "ifeval", "mmlu", "musr"])
    source: str
    rows: int = pa.Field(ge=1)
    items: int = pa.Field(ge=1)
    skipped_unsupported: int = pa.Field(ge=0)
    max_new_tokens: int = pa.Field(ge=1)


class BenchItems(pa.DataFrameModel):
    """PAPER.md §6.7: one row per evaluation item, greedy llama.cpp output and the verdict of the
    item's scorer (exact match, or the GSM8K / IFEval / MMLU / MuSR scorers of neagari.evaluation.scorers),
    or of lm-evaluation-harness read from its sample logs (neagari.evaluation.harness_samples), whose
    rows have no token count or finish reason (null: lm-eval logs neither)."""

    id: str = pa.Field(unique=True)
    domain: str
    answer: str
    output: str
    correct: bool
    n_new_tokens: int = pa.Field(ge=0, nullable=True)
    finish: str = pa.Field(isin=["stop", "eog", "length"], nullable=True)


class BenchComparison(pa.DataFrameModel):
    """Base vs patched accuracy per domain and overall ("all"), paired: discordant counts b (base
    wrong, patched right) and c, exact McNemar p, 95% CI of the difference (Newcombe's hybrid
    score interval, and the Wald interval the paper reports); percentages."""

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
    wald_ci_lo_pp: float
    wald_ci_hi_pp: float

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
