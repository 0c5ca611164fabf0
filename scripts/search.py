"""Rule search: one search run (any stage); resumes from its checkpoint if one is there."""
import json
from pathlib import Path

import torch

from neagari.engine.engine import Engine
from neagari.search.probes import load_probes
from neagari.search import split_probes
from neagari.search.promotion import OWN_CONTROLS_CAP, carry_controls, promoted_targets
from neagari.search.runner import Search, search_config
from neagari.workflow.smk import rule_context

settings, out, wc = dict(snakemake.params.settings), snakemake.output, snakemake.wildcards
with rule_context(snakemake, config_keys=["search"], seed=settings["seed"], device=snakemake.params.device,
                  dtype=snakemake.params.dtype) as log:
    torch.set_num_threads(snakemake.threads)
    engine = Engine.load(snakemake.input.model, device=snakemake.params.device, dtype=snakemake.params.dtype)
    # pipeline runs: {promotion, max_controls}; other runs promote nothing
    promotion = snakemake.params.promotion
    carried = [p for f in snakemake.input.promoted for p in load_probes(f, allow_empty=True)]
    targets, controls = split_probes(snakemake.input.probes, snakemake.input.controls, carried,
                                     own_cap=OWN_CONTROLS_CAP if promotion else None)
    if snakemake.input.iterations_from:  # random-flip null: as many flips as the real patch kept
        settings["iterations"] = json.loads(Path(snakemake.input.iterations_from[0]).read_text())["accepted"]
    settings["iterations"] = max(1, settings["iterations"])
    cfg = search_config(settings)
    label = f"{wc.model}/{wc.stage}/{wc.run}"
    log.info("%s: %d targets, %d controls, %s", label, len(targets), len(controls), cfg.as_dict())
    search = Search(engine, snakemake.input.model, targets, controls, cfg, Path(out.patch).parent, label=label)
    result = search.run(progress=False)
    search.finish(result, out.patch, out.iterations, out.summary, out.upstream,
                  metadata={"stage": wc.stage, "run": wc.run})
    # the targets that guard the later domains (neagari.search.promotion)
    kept, newly = [], []
    if promotion:
        newly = promoted_targets(targets, result.base_gaps, result.final_gaps, promotion["promotion"])
        n_base = sum(len(load_probes(f)) for f in snakemake.input.controls)
        kept = carry_controls(carried, newly, n_base, promotion["max_controls"], promotion["promotion"])
    doc = {"domain": "promoted", "version": "neagari", "probes": {"promoted_controls": [
        {"name": p.name, "prompt": p.prompt, "correct": p.correct, "wrong": p.wrong,
         "base_correct_id": p.correct_id, "base_wrong_id": p.wrong_id} for p in kept]}}
    Path(out.promoted).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    log.info("%d/%d accepted (%s); %d targets promoted (%s), %d controls carried on", result.accepted,
             result.iterations_run, result.stop_reason, len(newly), promotion["promotion"] if promotion else "none",
             len(kept))
