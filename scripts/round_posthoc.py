"""Rule round_posthoc: an fp model's float file rounded to Q1_0 or Q2_0 by llama.cpp's reference
rule (neagari/engine/requantize.py); the fp model's training-loss table under this model's name."""
import polars as pl

from neagari.embedded.schemas import TrainingLoss
from neagari.engine.gguf_io import GGUFFile
from neagari.engine.quants import format_named
from neagari.engine.requantize import quantize_gguf
from neagari.tables import read_table, write_table
from neagari.workflow.smk import rule_context

p, i, o = snakemake.params, snakemake.input, snakemake.output
with rule_context(snakemake, config_keys=["models"]) as log:
    fmt = format_named(p.format)
    out = quantize_gguf(i.float, o.gguf, fmt.GGML_TYPE)
    types = GGUFFile(out).summary()["types"]
    log.info("%s -> %s (%s): %s", i.float, out, fmt.NAME, ", ".join(f"{n} {t}" for t, n in sorted(types.items())))
    history = TrainingLoss.validate(read_table(i.history))
    write_table(history.with_columns(pl.lit(snakemake.wildcards.model).alias("model")), o.history, TrainingLoss)
