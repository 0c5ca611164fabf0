"""Rule build_fixture_model: a random Qwen3 Q1_0 GGUF of the configured shape."""
from neagari.engine.fixtures import spec_from_dict, write_fixture_model
from neagari.engine.gguf_io import GGUFFile
from neagari.workflow.smk import rule_context

spec = spec_from_dict(snakemake.params.spec)
with rule_context(snakemake, config_keys=["models"], seed=spec.seed) as log:
    path = write_fixture_model(snakemake.output.gguf, spec)
    log.info("wrote %s: %s", path, GGUFFile(path).summary())
