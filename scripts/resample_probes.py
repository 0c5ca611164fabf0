"""Rule resample_probes: bootstrap resamples of one pass-1 search's targets and controls, each a
probe file the search rule's script runs as it is, and the table of the probes each one drew."""
import json
from pathlib import Path

from neagari.analysis import sensitivity
from neagari.analysis.schemas import ProbeResamples
from neagari.search import split_probes
from neagari.search.probes import load_probes
from neagari.search.promotion import OWN_CONTROLS_CAP
from neagari.tables import write_table
from neagari.workflow.smk import rule_context

inp, out, p = snakemake.input, snakemake.output, snakemake.params
with rule_context(snakemake, config_keys=["search"], seed=p.seed) as log:
    # the probes exactly as the pass-1 search (scripts/search.py) splits them, carried controls included
    carried = [q for f in inp.promoted for q in load_probes(f, allow_empty=True)]
    targets, controls = split_probes(inp.probes, inp.controls, carried,
                                     own_cap=OWN_CONTROLS_CAP if p.promotion else None)
    resamples = [sensitivity.resample_probes(targets, controls, p.seed, i) for i in p.resamples]
    for r, path in zip(resamples, out.probes):
        doc = sensitivity.probe_document(r, snakemake.wildcards.domain)
        Path(path).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_table(sensitivity.resample_table(resamples), out.table, ProbeResamples)
    log.info("%d resamples of %d targets and %d controls (seed %d)", len(resamples), len(targets), len(controls),
             p.seed)
