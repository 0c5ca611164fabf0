"""Rule terrain_model: every terrain table of one model file (base, patched or MLP-randomized):
token-embedding geometry, layer evolution and WordNet alignment (neagari.analysis.terrain.profile)."""
from neagari.engine.engine import Engine
from neagari.workflow.smk import rule_context
from neagari.tables import write_table
from neagari.analysis.terrain.profile import TABLES, TerrainSettings, profile
from neagari.workflow.wordnet import load_wordnet

p, wc = snakemake.params, snakemake.wildcards
settings = TerrainSettings.from_config({"seed": p.seed, **p.settings})
with rule_context(snakemake, config_keys=["terrain"], seed=settings.seed, device=p.device, dtype=p.dtype) as log:
    engine = Engine.load(snakemake.input.model, device=p.device, dtype=p.dtype)
    tables = profile(engine, load_wordnet(snakemake.input.wordnet), settings, wc.model, wc.label)
    for name, schema in TABLES.items():
        write_table(tables[name], snakemake.output[name], schema)
    log.info("%s %s: %d WordNet words, participation ratio %.1f of %d", wc.model, wc.label,
             tables["wordnet_words"].height, tables["embedding"]["participation_ratio"][0], engine.cfg.hidden)
