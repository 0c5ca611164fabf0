"""Rule eval_heldout_verbatim: held-out verbatim outcomes of the base model and one targeted patch
(PAPER.md §6 item 8), and both models' generations on the optimized training prompts."""
import gc
import json
from pathlib import Path

import polars as pl
import torch

from neagari.engine.engine import Engine
from neagari.search.probes import load_probes
from neagari.evaluation.quality import greedy_answers, verbatim_outcomes
from neagari.workflow.smk import rule_context
from neagari.evaluation.schemas import HeldoutGenerations, HeldoutVerbatim
from neagari.tables import write_table

p, inp = snakemake.params, snakemake.input
with rule_context(snakemake, config_keys=["quality"], device=p.device, dtype=p.dtype) as log:
    torch.set_num_threads(snakemake.threads)
    heldout = json.loads(Path(inp.heldout).read_text())["probes"]
    trained = load_probes(inp.probes, roles=["target"])
    outcomes, generations = {}, {}
    for variant in ("base", "patched"):
        engine = Engine.load(getattr(inp, variant), device=p.device, dtype=p.dtype)
        outcomes[variant] = verbatim_outcomes(engine, heldout, max_new_tokens=p.max_new_tokens,
                                              batch_size=p.batch_size, desc=f"held-out {variant}")
        generations[variant] = greedy_answers(engine, [t.prompt for t in trained], [""] * len(trained),
                                              p.max_new_tokens, p.batch_size)
        log.info("%s: %s", variant, dict(outcomes[variant]["outcome"].value_counts().iter_rows()))
        del engine
        gc.collect()
    table = (outcomes["base"].rename({"output": "base_output", "outcome": "base_outcome"})
             .join(outcomes["patched"].select("name", pl.col("output").alias("patched_output"),
                                              pl.col("outcome").alias("patched_outcome")), on="name", maintain_order="left")
             .select("name", "domain", "base_output", "patched_output", "base_outcome", "patched_outcome"))
    if table.height != len(heldout):
        raise RuntimeError(f"{table.height} joined rows for {len(heldout)} held-out probes")
    write_table(table, snakemake.output.table, HeldoutVerbatim)
    gens = pl.DataFrame({
        "name": [t.name for t in trained],
        "domain": [str(t.extra.get("category", "")) for t in trained],
        "correct": [t.correct for t in trained],
        "base_output": generations["base"],
        "patched_output": generations["patched"],
    }).with_columns(*(pl.col(f"{v}_output").str.strip_chars_start().str.starts_with(pl.col("correct"))
                      .alias(f"{v}_starts_correct") for v in ("base", "patched")))
    write_table(gens, snakemake.output.generations, HeldoutGenerations)
    for r in gens.iter_rows(named=True):
        log.info("%s\n  base:    %r\n  patched: %r", r["name"], r["base_output"], r["patched_output"])
