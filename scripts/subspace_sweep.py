"""Rule subspace_sweep: one patch's weight and activation deltas scored against every candidate
basis, layer by layer (the base is the model the patch was searched on)."""
import polars as pl
import torch

from neagari.engine.engine import Engine
from neagari.search.patch import read_patch
from neagari.search.probes import load_probes, token_ids
from neagari.workflow.smk import rule_context
from neagari.analysis.subspace.measures import resolve_ranks
from neagari.analysis.subspace.bases import load_candidates
from neagari.analysis.subspace.sweep import sweep_patch
from neagari.analysis.subspace.schemas import SubspacePerLayer
from neagari.tables import write_table

p, wc = snakemake.params, snakemake.wildcards
with rule_context(snakemake, config_keys=["subspace"], seed=p.seed, device=p.device, dtype=p.dtype) as log:
    torch.set_num_threads(snakemake.threads)
    engine = Engine.load(snakemake.input.model, device=p.device, dtype=p.dtype)
    cands, meta = load_candidates(snakemake.input.bases)
    if (meta["hidden"], meta["n_layer"]) != (engine.cfg.hidden, engine.cfg.n_layer):
        raise ValueError(f"bases of a {meta['n_layer']}x{meta['hidden']} model, patch base is "
                         f"{engine.cfg.n_layer}x{engine.cfg.hidden}")
    moves = read_patch(snakemake.input.patch).moves
    targets = [token_ids(q, engine.tokenizer)[0] for q in load_probes(snakemake.input.probes, roles=["target"])]
    controls = [token_ids(q, engine.tokenizer)[0] for q in load_probes(snakemake.input.controls)]
    ranks = resolve_ranks(p.ranks, engine.cfg.hidden)
    df = sweep_patch(engine, moves, cands, targets, controls, ranks, p.n_random, p.seed, p.batch_size)
    df = df.with_columns(model=pl.lit(wc.model), patch=pl.lit(f"{wc.stage}/{wc.run}"), stage=pl.lit(wc.stage),
                         run=pl.lit(wc.run))
    write_table(df, snakemake.output.table, SubspacePerLayer)
    log.info("%s/%s: %d moves, %d targets, %d controls, %d rows", wc.stage, wc.run, len(moves), len(targets),
             len(controls), df.height)
