"""§3.3 and §8: does navigable degeneracy fall as bits per weight rise?

The paper predicts (§3.3) that the share of random group moves a fitness accepts falls as the
number of bits per weight rises, and names a second quantization of the same base model as the
missing test (§8). This module sets the searched models side by side by the format of their MLP
weights (the tensors the search moves): Q1_0 (1.125 bits per weight: 18 bytes per 128 weights) and
Q2_0 (2.25: 18 bytes per 64), each trained for its format (QAT) or rounded post hoc from the same
float network. Per model: pass-1 acceptance pooled over its domains and per domain with Wilson
intervals, the null baseline's trained-vs-randomized gap (Newcombe interval), the median per-flip
effect |Δgap| and the share of accepted pass-1 flips that moved any target across its boundary.

The verdict pairs a 1-bit and a ternary model of the same training (QAT with QAT, post hoc with
post hoc) and reads the difference of their pooled pass-1 acceptance (1-bit minus ternary), with its
Newcombe 95% interval: ``confirmed`` when every pair's interval lies above 0 (the 1-bit model
accepts more), ``refuted`` when every pair's lies below 0, ``inconclusive`` otherwise, ``not
measured`` without a pair.
"""

from __future__ import annotations

import statistics
from typing import Mapping, Sequence

import pandera.polars as pa
import polars as pl

from neagari.engine.quants import block_format
from neagari.stats import difference_ci, wilson_interval

MLP_PREFIXES = ("ffn_gate", "ffn_up", "ffn_down")
TRAININGS = ("QAT", "post hoc")
BITS_VERDICTS = ("confirmed", "refuted", "inconclusive", "not measured")


def bits_per_weight(fmt) -> float:
    """Stored bits per weight of a block format: its block's bytes over its weights (scale included)."""
    return fmt.BLOCK_BYTES * 8 / fmt.QK


def mlp_format(tensor_types: Mapping[str, int]) -> str:
    """The block format of a model's MLP weights (tensor name → GGML type); one for all of them."""
    names = {block_format(t).NAME if block_format(t) else f"type {t}"
             for n, t in tensor_types.items() if n.split(".")[-2].startswith(MLP_PREFIXES)}
    if len(names) != 1:
        raise ValueError(f"the MLP weights are not of one block format: {sorted(names) or 'none'}")
    return names.pop()


def training_of(spec: Mapping) -> str:
    """QAT (trained for its format) or post hoc (a float network rounded), from a config model entry."""
    if spec.get("source") == "posthoc" or spec.get("variant") == "fp":
        return "post hoc"
    return "QAT"


class BitsComparison(pa.DataFrameModel):
    """One row per searched model: its format, bits per weight and what the search found on it."""

    model: str
    format: str
    training: str = pa.Field(isin=list(TRAININGS))
    bits_per_weight: float = pa.Field(gt=0)
    iterations: int = pa.Field(ge=0)
    accepted: int = pa.Field(ge=0)
    rate: float = pa.Field(ge=0, le=1, nullable=True)
    ci_lo: float = pa.Field(ge=0, le=1, nullable=True)
    ci_hi: float = pa.Field(ge=0, le=1, nullable=True)
    null_gap_pp: float = pa.Field(nullable=True)
    null_gap_lo_pp: float = pa.Field(nullable=True)
    null_gap_hi_pp: float = pa.Field(nullable=True)
    flips: int = pa.Field(ge=0)
    median_abs_delta: float = pa.Field(ge=0, nullable=True)
    crossing_flips: int = pa.Field(ge=0)
    crossing_share: float = pa.Field(ge=0, le=1, nullable=True)
    heldout_nll: float = pa.Field(ge=0, nullable=True)  # the quality report's, where it has the model
    uniform_nll: float = pa.Field(gt=0, nullable=True)

    class Config:
        strict = True


class BitsByDomain(pa.DataFrameModel):
    """Pass-1 acceptance per model and domain, with its Wilson 95% interval."""

    model: str
    format: str
    training: str = pa.Field(isin=list(TRAININGS))
    domain: str
    iterations: int = pa.Field(ge=0)
    accepted: int = pa.Field(ge=0)
    rate: float = pa.Field(ge=0, le=1, nullable=True)
    ci_lo: float = pa.Field(ge=0, le=1, nullable=True)
    ci_hi: float = pa.Field(ge=0, le=1, nullable=True)

    class Config:
        strict = True


def _rate(k: int, n: int) -> tuple[float | None, float | None, float | None]:
    return (k / n, *wilson_interval(k, n)) if n else (None, None, None)


def pass1_rows(acceptance: pl.DataFrame) -> pl.DataFrame:
    """The pass-1 runs of an acceptance table (run ``pass1/<domain>``)."""
    return acceptance.filter(pl.col("run").str.starts_with("pass1/"))


def model_rows(name: str, fmt: str, training: str, acceptance: pl.DataFrame, null_verdict: Mapping | None,
               crossing_flips: pl.DataFrame, quality: Mapping | None = None) -> tuple[dict, list[dict]]:
    """(the comparison row, the per-domain rows) of one model from its audit tables: the
    acceptance table, the null baseline's verdict row (None without a null baseline) and the
    boundary-crossing flips table (its pass-1 patches are counted); ``quality``, the model's row
    of the quality report (held-out and uniform loss), where there is one: a model whose held-out
    loss is near the uniform one no longer models its data, and its acceptance says little."""
    from neagari.engine.quants import format_named

    bpw = bits_per_weight(format_named(fmt))
    p1 = pass1_rows(acceptance)
    domains = []
    for r in p1.iter_rows(named=True):
        rate, lo, hi = _rate(r["accepted"], r["iterations"])
        domains.append({"model": name, "format": fmt, "training": training, "domain": r["run"].split("/", 1)[1],
                        "iterations": r["iterations"], "accepted": r["accepted"], "rate": rate, "ci_lo": lo, "ci_hi": hi})
    k, n = int(p1["accepted"].sum()), int(p1["iterations"].sum())
    rate, lo, hi = _rate(k, n)
    gap = (None, None, None)
    if null_verdict:
        v = null_verdict
        d, glo, ghi = difference_ci(v["trained_accepted"], v["trained_iterations"], v["null_accepted"],
                                    v["null_iterations"])
        gap = (100 * d, 100 * glo, 100 * ghi)
    flips = crossing_flips.filter(pl.col("patch").str.starts_with("pass1/"))
    effects = [x for x in flips["mean_abs_delta"].to_list() if x is not None]
    crossing = int(flips["changes_target_sign"].sum()) if flips.height else 0
    row = {"model": name, "format": fmt, "training": training, "bits_per_weight": bpw, "iterations": n,
           "accepted": k, "rate": rate, "ci_lo": lo, "ci_hi": hi, "null_gap_pp": gap[0], "null_gap_lo_pp": gap[1],
           "null_gap_hi_pp": gap[2], "flips": flips.height,
           "median_abs_delta": statistics.median(effects) if effects else None,
           "crossing_flips": crossing, "crossing_share": crossing / flips.height if flips.height else None,
           "heldout_nll": (quality or {}).get("heldout_nll"), "uniform_nll": (quality or {}).get("uniform_nll")}
    return row, domains


COMPARISON_SCHEMA = {"model": pl.String, "format": pl.String, "training": pl.String, "bits_per_weight": pl.Float64,
                     "iterations": pl.Int64, "accepted": pl.Int64, "rate": pl.Float64, "ci_lo": pl.Float64,
                     "ci_hi": pl.Float64, "null_gap_pp": pl.Float64, "null_gap_lo_pp": pl.Float64,
                     "null_gap_hi_pp": pl.Float64, "flips": pl.Int64, "median_abs_delta": pl.Float64,
                     "crossing_flips": pl.Int64, "crossing_share": pl.Float64, "heldout_nll": pl.Float64,
                     "uniform_nll": pl.Float64}
DOMAIN_SCHEMA = {"model": pl.String, "format": pl.String, "training": pl.String, "domain": pl.String,
                 "iterations": pl.Int64, "accepted": pl.Int64, "rate": pl.Float64, "ci_lo": pl.Float64,
                 "ci_hi": pl.Float64}


def comparison_tables(rows: Sequence[tuple[dict, list[dict]]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(comparison, by domain) of :func:`model_rows` results, lowest bits per weight first, validated."""
    table = pl.DataFrame([r for r, _ in rows], schema=COMPARISON_SCHEMA).sort("bits_per_weight", "training",
                                                                              maintain_order=True)
    domains = pl.DataFrame([d for _, ds in rows for d in ds], schema=DOMAIN_SCHEMA)
    return BitsComparison.validate(table), BitsByDomain.validate(domains)


def bits_verdict(table: pl.DataFrame) -> dict:
    """The §3.3 reading of a comparison table (module docstring): verdict, the rule, and per pair
    (training, 1-bit model, ternary model, difference and its interval in percentage points)."""
    rule = ("confirmed: for every training (QAT, post hoc) with both a 1-bit and a ternary model, the Newcombe "
            "95% interval of their pass-1 acceptance difference (1-bit minus ternary) lies above 0; refuted: "
            "every such interval lies below 0; otherwise inconclusive")
    pairs = []
    for training in TRAININGS:
        rows = table.filter((pl.col("training") == training) & (pl.col("iterations") > 0))
        low = rows.filter(pl.col("format") == "Q1_0").rows(named=True)
        high = rows.filter(pl.col("format") == "Q2_0").rows(named=True)
        for a in low:
            for b in high:
                d, lo, hi = difference_ci(a["accepted"], a["iterations"], b["accepted"], b["iterations"])
                pairs.append({"training": training, "one_bit": a["model"], "ternary": b["model"],
                              "difference_pp": 100 * d, "lo_pp": 100 * lo, "hi_pp": 100 * hi})
    if not pairs:
        verdict = "not measured"
    elif all(p["lo_pp"] > 0 for p in pairs):
        verdict = "confirmed"
    elif all(p["hi_pp"] < 0 for p in pairs):
        verdict = "refuted"
    else:
        verdict = "inconclusive"
    return {"verdict": verdict, "rule": rule, "pairs": pairs}
