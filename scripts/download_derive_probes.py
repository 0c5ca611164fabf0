"""Rule derive_probes: a probe set built from downloaded files (the upstream search script's base
controls, the upstream held-out evaluation script's verbatim training probes, the upstream 1.7B
notebook's verbatim prompts and knowledge controls, samples of MMLU / MuSR as controls)."""
import json
from pathlib import Path

from neagari.evaluation.datasets import derive_probe_set
from neagari.workflow.smk import rule_context

p = snakemake.params
with rule_context(snakemake, config_keys=["downloads"], seed=p.spec["seed"]) as log:
    files = dict(zip(p.download_keys, snakemake.input.files))
    doc = derive_probe_set(p.spec, files, snakemake.wildcards.name)
    Path(snakemake.output.probes).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    log.info("%s: %s", snakemake.output.probes, {k: len(v) for k, v in doc["probes"].items()})
