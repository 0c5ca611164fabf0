"""Rule score_stage_models: every probe set scored on the base model and after each domain of the
five-domain pipeline; from it the §6.6 interference matrix (each domain's patch against the model
it was searched on) and the §5.2 rank-2 drift audit (is the calibrated wrong token still the top
rival?)."""
import polars as pl
import torch

from neagari.analysis import audits
from neagari.engine.engine import Engine
from neagari.search.probes import load_probes, token_ids, top_rival
from neagari.workflow.smk import rule_context
from neagari.analysis.schemas import InterferenceMatrix, Rank2Drift, StageScores
from neagari.tables import write_table

p, out = snakemake.params, snakemake.output
model = snakemake.wildcards.model
with rule_context(snakemake, config_keys=["search"], device=p.device, dtype=p.dtype) as log:
    probe_sets = {path.split("/")[-1].removesuffix(".json"): load_probes(path) for path in snakemake.input.probes}
    rows = []
    for step, (label, path) in enumerate(zip(p.stage_labels, snakemake.input.models)):
        engine = Engine.load(path, device=p.device, dtype=p.dtype)
        for name, probes in probe_sets.items():
            enc = [token_ids(q, engine.tokenizer) for q in probes]
            logits = torch.stack(engine.logits([e[0] for e in enc]))
            c = torch.tensor([e[1] for e in enc])
            w = torch.tensor([e[2] for e in enc])
            idx = torch.arange(len(enc))
            top = top_rival(logits, c)
            for q, gap, tw, gtw, wid in zip(probes, (logits[idx, c] - logits[idx, w]).tolist(), top.tolist(),
                                            (logits[idx, c] - logits[idx, top]).tolist(), w.tolist()):
                rows.append({"model": model, "stage_model": label, "step": step, "probe_set": name, "name": q.name,
                             "gap": gap, "calibrated_wrong_id": wid, "top_wrong_id": tw, "gap_vs_top_wrong": gtw})
    scores = pl.DataFrame(rows)
    write_table(scores, out.scores, StageScores)
    # each domain's patch measured against the model it was searched on (its own base)
    pairs = []
    for step in range(1, len(p.stage_labels)):
        before = scores.filter(pl.col("step") == step - 1).select("probe_set", "name", pl.col("gap").alias("gap_base"))
        after = scores.filter(pl.col("step") == step).select("probe_set", "name", pl.col("gap").alias("gap_patched"))
        joined = pl.concat([before, after.drop("probe_set", "name")], how="horizontal")
        pairs.append(joined.select(pl.lit(p.stage_labels[step]).alias("patch_domain"),
                                   pl.col("probe_set").alias("probe_domain"), pl.col("name").alias("probe"),
                                   "gap_base", "gap_patched"))
    write_table(audits.interference_matrix(pl.concat(pairs)), out.matrix, InterferenceMatrix)
    drift = (scores.filter(pl.col("step") > 0)
             .group_by("model", "stage_model", "probe_set", maintain_order=True)
             .agg(pl.len().alias("probes"), (pl.col("top_wrong_id") != pl.col("calibrated_wrong_id")).sum().alias("drifted"),
                  pl.col("gap").mean().alias("mean_gap_calibrated"), pl.col("gap_vs_top_wrong").mean().alias("mean_gap_top_wrong"))
             .with_columns((pl.col("drifted") / pl.col("probes")).alias("drift_share"),
                           (pl.col("mean_gap_calibrated") - pl.col("mean_gap_top_wrong")).alias("mean_gap_difference"),
                           pl.col("probes").cast(pl.Int64), pl.col("drifted").cast(pl.Int64)))
    write_table(drift.select("model", "stage_model", "probe_set", "probes", "drifted", "drift_share",
                             "mean_gap_calibrated", "mean_gap_top_wrong", "mean_gap_difference"), out.drift, Rank2Drift)
    log.info("scored %d probe sets on %d models", len(probe_sets), len(p.stage_labels))
