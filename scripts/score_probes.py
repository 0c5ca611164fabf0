"""Rule score_probes: the gap of every probe of one probe set on one model."""
from neagari.engine.engine import Engine
from neagari.search.probes import load_probes, score_probes
from neagari.workflow.smk import rule_context
from neagari.search.schemas import ProbeScores
from neagari.tables import write_table

with rule_context(snakemake, config_keys=["score", "probe_sets"], device=snakemake.params.device,
                  dtype=snakemake.params.dtype) as log:
    engine = Engine.load(snakemake.input.model, device=snakemake.params.device, dtype=snakemake.params.dtype)
    probes = load_probes(snakemake.input.probes)
    table = score_probes(engine, probes, batch_size=snakemake.params.batch_size)
    write_table(table, snakemake.output.table, ProbeScores)
    log.info("%d probes, %d with gap <= 0", len(table), int((table["gap"] <= 0).sum()))
