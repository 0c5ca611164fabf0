"""Rule terrain_figures: one model's terrain across its files (base black, MLP-randomized null
orange-red, patched grey): eigenspectrum, cosine histogram, simplex-volume CV vs Gaussian, digit
manifold, layer evolution, and WordNet alignment with 95% intervals over seeds."""
from neagari.report.plotting import save, use_style
from neagari.workflow.smk import rule_context

use_style(snakemake.input.style, snakemake.params.seed)
import polars as pl  # noqa: E402

from neagari.report import terrain_figures  # noqa: E402

inp, out, model = snakemake.input, snakemake.output, snakemake.wildcards.model
with rule_context(snakemake, config_keys=["terrain"], seed=snakemake.params.seed) as log:
    T = {k: pl.read_parquet(inp[k]) for k in terrain_figures.TABLES}
    for name in terrain_figures.FIGURES:
        save(getattr(terrain_figures, name)(T, model), getattr(out, name), getattr(out, f"{name}_pdf"))
    log.info("terrain figures of %s: %d model files", model, T["embedding"].height)
