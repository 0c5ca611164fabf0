"""pandera models of the tables the search writes: probe gaps on one model, the per-iteration
record of a search, and calibration's report of probes whose tokens do not compare their answers.
Gaps are logits, logit(correct) - logit(wrong)."""

from __future__ import annotations

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
    correct_token: str
    wrong_token: str
    top1_token: str

    class Config:
        strict = True

    @pa.dataframe_check
    def gap_is_difference(cls, data) -> pl.LazyFrame:
        lf = data.lazyframe
        # the gap is a float32 difference: its rounding grows with the logits' magnitude
        scale = pl.max_horizontal(pl.lit(1.0), pl.col("correct_logit").abs(), pl.col("wrong_logit").abs())
        return lf.select(((pl.col("correct_logit") - pl.col("wrong_logit") - pl.col("gap")).abs() < 1e-4 * scale))


class SearchIterations(pa.DataFrameModel):
    """One row per search iteration: the move, the verdict, and every probe's gap after it
    (targets first, then controls, in the order of the search's ``probes`` list)."""

    iteration: int = pa.Field(ge=0, unique=True)
    layer: int = pa.Field(ge=0)
    proj: str
    group: int = pa.Field(ge=0)
    move_type: str = pa.Field(isin=["group", "scale", "negate", "zero_plus", "zero_minus"])
    bit: int = pa.Field(ge=0, le=15, nullable=True)
    accepted: bool
    fitness_before: float
    fitness_after: float
    focus: int = pa.Field(ge=0, nullable=True)
    gaps: list[float] = pa.Field(nullable=False)


class ProbeTokenIssues(pa.DataFrameModel):
    """One row per probe whose scored tokens do not compare its answers (neagari.search.calibrate
    .token_report): both answers on one token, or an answer scored at a whitespace token."""

    probe_set: str
    name: str
    role: str
    correct: str
    wrong: str
    correct_id: int = pa.Field(ge=0)
    wrong_id: int = pa.Field(ge=0)
    correct_token: str
    wrong_token: str
    ids_stored: bool  # base_correct_id / base_wrong_id in the file, else the texts' first tokens
    same_first_token: bool
    correct_whitespace: bool
    wrong_whitespace: bool
    base_gap: float = pa.Field(nullable=True)

    class Config:
        strict = True

    @pa.dataframe_check
    def flagged(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("same_first_token") | pl.col("correct_whitespace")
                                     | pl.col("wrong_whitespace"))

    @pa.dataframe_check
    def same_token_same_id(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("same_first_token") == (pl.col("correct_id") == pl.col("wrong_id")))
