"""Rule quantize_posthoc: an fp model's float file rounded to Q1_0 (neagari/engine/requantize.py)."""
from neagari.engine.gguf_io import GGUFFile
from neagari.engine.requantize import quantize_gguf
from neagari.workflow.smk import rule_context

with rule_context(snakemake, config_keys=[]) as log:
    out = quantize_gguf(snakemake.input.float, snakemake.output.gguf)
    types = GGUFFile(out).summary()["types"]
    log.info("%s -> %s: %s", snakemake.input.float, out, ", ".join(f"{n} {t}" for t, n in sorted(types.items())))
