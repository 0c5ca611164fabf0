"""Rule search: one search run (any stage); resumes from its checkpoint if one is there."""
import json
from pathlib import Path

import torch

from neagari.engine.engine import Engine
from neagari.search.probes import load_probes
from neagari.search import split_probes
from neagari.search.runner import Search, search_config
from neagari.workflow.smk import rule_context

settings, out, wc = dict(snakemake.params.settings), snakemake.output, snakemake.wildcards
with rule_context(snakemake, config_keys=["search"], seed=settings["seed"], device=snakemake.params.device,
                  dtype=snakemake.params.dtype) as log:
    torch.set_num_threads(snakemake.threads)
    engine = Engine.load(snakemake.input.model, device=snakemake.params.device, dtype=snakemake.params.dtype)
    promoted = [p for f in snakemake.input.promoted for p in load_probes(f, allow_empty=True)]
    targets, controls = split_probes(snakemake.input.probes, snakemake.input.controls, promoted)
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
    # targets this run carried across zero become controls for later domains (capped, newest kept)
    newly = [p for p, b, f in zip(targets, result.base_gaps, result.final_gaps) if b <= 0 < f]
    kept = (promoted + newly)[-snakemake.params.promoted_cap:] if snakemake.params.promoted_cap else []
    doc = {"domain": "promoted", "version": "neagari", "probes": {"promoted_controls": [
        {"name": p.name, "prompt": p.prompt, "correct": p.correct, "wrong": p.wrong,
         "base_correct_id": p.correct_id, "base_wrong_id": p.wrong_id} for p in kept]}}
    Path(out.promoted).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    log.info("%d/%d accepted (%s); %d targets crossed, %d promoted controls", result.accepted,
             result.iterations_run, result.stop_reason, len(newly), len(kept))
