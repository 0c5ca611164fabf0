"""Rule subspace_bases: the weight-side candidate bases of one model (write, read, unembedding,
circuit, write-not-read and random), every layer, at the largest configured rank."""
import torch

from neagari.engine.engine import Engine
from neagari.workflow.smk import rule_context
from neagari.analysis.subspace.measures import resolve_ranks
from neagari.analysis.subspace.bases import save_candidates, weight_candidates

p = snakemake.params
with rule_context(snakemake, config_keys=["subspace"], seed=p.seed, device=p.device, dtype=p.dtype) as log:
    torch.set_num_threads(snakemake.threads)
    engine = Engine.load(snakemake.input.model, device=p.device, dtype=p.dtype)
    H = engine.cfg.hidden
    kmax = max(resolve_ranks(p.ranks, H))
    broad = resolve_ranks([p.broad_rank], H)[0]
    cands = weight_candidates(engine, kmax, broad, seed=p.seed)
    save_candidates(snakemake.output.bases, cands, {"model": snakemake.wildcards.model, "hidden": H,
                                                    "n_layer": engine.cfg.n_layer, "kmax": kmax, "broad_rank": broad})
    log.info("%d candidates x %d layers, rank <= %d (H = %d)", len(cands), engine.cfg.n_layer, kmax, H)
