"""Rule calibrate_probes: base-model calibration of one probe set (PAPER.md §3)."""
import json
from pathlib import Path

from neagari.search.calibrate import calibrate_document
from neagari.engine.engine import Engine
from neagari.workflow.smk import rule_context

with rule_context(snakemake, config_keys=["probe_sets"], device=snakemake.params.device,
                  dtype=snakemake.params.dtype) as log:
    engine = Engine.load(snakemake.input.model, device=snakemake.params.device, dtype=snakemake.params.dtype)
    doc = json.loads(Path(snakemake.input.probes).read_text())
    out = calibrate_document(engine, doc, batch_size=snakemake.params.batch_size)
    Path(snakemake.output.probes).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    log.info("%s", out["_calibration"])
