"""Rule quality_report: one table over all embedded models and a short Markdown report."""
import math

import polars as pl

from neagari.evaluation.agreement import TIE
from neagari.evaluation.quality import Bars, quality_bars
from neagari.workflow.smk import rule_context
from neagari.evaluation.schemas import QualityBars, QualitySummary
from neagari.tables import read_table, write_table

lo, hi = snakemake.params.band
bars = Bars(band=(lo, hi))
with rule_context(snakemake, config_keys=["quality"]) as log:
    table = pl.concat([read_table(p) for p in snakemake.input.summaries])
    write_table(table, snakemake.output.table, QualitySummary)
    lines = ["# Embedded model quality", ""]
    bar_rows = []
    for model, hist_path, verb_path, cc_path, copy_path in zip(
            table["model"].unique(maintain_order=True), snakemake.input.histories, snakemake.input.verbatim,
            snakemake.input.crosschecks, snakemake.input.copies):
        t = table.filter(pl.col("model") == model)
        hist = read_table(hist_path)
        nll, uni = t["heldout_nll"][0], t["uniform_nll"][0]
        lines += [f"## {model} ({hist['variant'][0]})", "",
                  f"Held-out loss {nll:.3f} nats/token (perplexity {math.exp(nll):.1f}); a uniform model over "
                  f"the vocabulary scores {uni:.3f} (perplexity {math.exp(uni):.0f}). Training: {len(hist)} steps, "
                  f"{hist['elapsed_s'][-1] / 60:.1f} min, final held-out loss {hist['eval_loss'][-1]:.3f}.", "",
                  "| domain | eval items | exact match | probes | wrong probes |", "|---|---|---|---|---|"]
        for r in t.iter_rows(named=True):
            acc = "" if r["eval_accuracy"] is None else f"{100 * r['eval_accuracy']:.1f}%"
            share = "" if r["probes_wrong_share"] is None else f"{100 * r['probes_wrong_share']:.0f}%"
            lines.append(f"| {r['domain']} | {r['eval_n'] or ''} | {acc} | {r['probes_n'] or ''} | {share} |")
        counts = dict(read_table(verb_path)["outcome"].value_counts().iter_rows())
        lines += ["", "Held-out verbatim outcomes at baseline: " +
                  ", ".join(f"{k} {counts.get(k, 0)}" for k in ("PASS", "COPY", "PARTIAL", "OTHER")) + "."]
        cp = read_table(copy_path).row(0, named=True)
        lines += [f"Copy diagnostic, {cp['lists']} held-out word lists each followed by its repetition: "
                  f"{cp['first_nll']:.2f} nats/token on a list's first occurrence, {cp['repeat_nll']:.2f} on its "
                  f"repetition (a model that copies from its context predicts the repetition almost exactly; "
                  f"the copy tasks, editing, verbatim extraction and tool arguments, need that)."]
        cc = dict(read_table(cc_path)["verdict"].value_counts().iter_rows())
        lines += [f"llama.cpp on the exported file, greedy, {sum(cc.values())} prompts: {cc.get('identical', 0)} "
                  f"identical to our engine, {cc.get('near-tie', 0)} identical up to a near-tie (they part at or after "
                  f"the first step where either side's top-2 margin is at most {TIE:.0%} of its logit range; "
                  f"llama.cpp rounds activations to 8 bits), {cc.get('disagree', 0)} disagreeing."]
        shares = t.filter(pl.col("domain").is_in(["editing", "instruction", "tool_calling", "math", "coding"]))
        in_band = shares.filter(pl.col("probes_wrong_share").is_between(lo, hi))
        lines += [f"Target-probe domains with a wrong share inside [{lo:.0%}, {hi:.0%}]: "
                  f"{len(in_band)} of {len(shares)}.", ""]
        rows = [{"model": model, **r} for r in quality_bars(t, counts, cp, bars)]
        bar_rows += rows
        met = sum(r["met"] for r in rows)
        lines += [f"Bars (neagari.evaluation.quality.Bars): {met} of {len(rows)} met.", "",
                  "| requirement | subject | measured | bar | met |", "|---|---|---|---|---|"]
        lines += [f"| {r['requirement']} | {r['subject']} | {r['measured']} | {r['bar']} | "
                  f"{'yes' if r['met'] else '**no**'} |" for r in rows]
        lines.append("")
    write_table(pl.DataFrame(bar_rows), snakemake.output.bars, QualityBars)
    open(snakemake.output.report, "w").write("\n".join(lines) + "\n")
    log.info("\n".join(lines))
