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


SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    "search_iterations": SearchIterations,
    "probe_scores": ProbeScores, "training_loss": TrainingLoss, "eval_items": EvalItems,
    "verbatim_outcomes": VerbatimOutcomes, "quality_summary": QualitySummary,
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
