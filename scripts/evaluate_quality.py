"""Rule evaluate_quality: held-out loss, per-domain exact match, wrong-probe share, verbatim outcomes."""
import json
import math
from pathlib import Path

import polars as pl

from neagari.engine.engine import Engine
from neagari.evaluation.quality import (chance_of, copy_diagnostic, evaluate_items, heldout_nll, uniform_nll,
                                       verbatim_outcomes)
from neagari.workflow.smk import rule_context
from neagari.evaluation.schemas import CopyDiagnostic, EvalItems, QualitySummary, VerbatimOutcomes
from neagari.tables import write_table
from neagari.embedded.toydata.copying import heldout_drills

p = snakemake.params
with rule_context(snakemake, config_keys=["quality"], device=p.device, dtype=p.dtype) as log:
    engine = Engine.load(snakemake.input.model, device=p.device, dtype=p.dtype)
    texts = [json.loads(line)["text"] for line in open(snakemake.input.heldout)][: p.n_heldout_texts]
    nll, n_tokens = heldout_nll(engine, texts)
    log.info("held-out NLL %.3f nats/token over %d tokens (perplexity %.1f)", nll, n_tokens, math.exp(nll))
    copying = copy_diagnostic(engine, heldout_drills(p.seed, p.n_copy_lists), batch_size=p.batch_size)
    write_table(pl.DataFrame([{"model": snakemake.wildcards.model, **copying}]), snakemake.output.copying,
                CopyDiagnostic)
    log.info("copy diagnostic: first list %.3f, repetition %.3f nats/token", copying["first_nll"], copying["repeat_nll"])
    items = [json.loads(line) for line in open(snakemake.input.eval_sets)]
    per_item = evaluate_items(engine, items, batch_size=p.batch_size, desc="eval items")
    write_table(per_item, snakemake.output.eval_items, EvalItems)
    verbatim = verbatim_outcomes(engine, json.loads(Path(snakemake.input.verbatim).read_text())["probes"],
                                 batch_size=p.batch_size, desc="verbatim")
    write_table(verbatim, snakemake.output.verbatim, VerbatimOutcomes)
    probe_rows = []
    for path in snakemake.input.probes:
        doc = json.loads(Path(path).read_text())
        gaps = [d["base_gap"] for group in doc["probes"].values() for d in group]
        probe_rows.append({"domain": Path(path).stem, "probes_n": len(gaps),
                           "probes_wrong_share": sum(g <= 0 for g in gaps) / len(gaps)})
    per_item = per_item.with_columns(pl.Series("chance", [chance_of(it) for it in items]))
    acc = per_item.group_by("domain").agg(pl.len().cast(pl.Int64).alias("eval_n"),
                                          pl.col("correct").mean().alias("eval_accuracy"),
                                          pl.col("chance").mean().alias("eval_chance"))
    summary = (acc.join(pl.DataFrame(probe_rows), on="domain", how="full", coalesce=True)
               .with_columns(pl.lit(snakemake.wildcards.model).alias("model"), pl.lit(nll).alias("heldout_nll"),
                             pl.lit(uniform_nll(engine.cfg.vocab_size)).alias("uniform_nll"))
               .select("model", "domain", "eval_n", "eval_accuracy", "eval_chance", "probes_n", "probes_wrong_share",
                       "heldout_nll", "uniform_nll").sort("domain"))
    write_table(summary, snakemake.output.summary, QualitySummary)
    log.info("\n%s\n%s", summary, verbatim["outcome"].value_counts())
