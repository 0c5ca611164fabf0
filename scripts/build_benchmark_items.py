"""Rule build_benchmark_items: GSM8K / IFEval / MMLU / MuSR rows as generation items in the
model's own chat template (PAPER.md §6 item 7)."""
import json

import polars as pl

from neagari.evaluation.benchmark_items import load_items, render_items
from neagari.engine.gguf_io import GGUFFile
from neagari.workflow.smk import rule_context
from neagari.evaluation.schemas import BenchmarkItemSets
from neagari.tables import write_table
from neagari.engine.tokenizer import GGUFTokenizer

p = snakemake.params
with rule_context(snakemake, config_keys=["evaluation"], seed=p.seed) as log:
    tok = GGUFTokenizer.from_metadata(dict(GGUFFile(snakemake.input.model).metadata))
    items, sets = [], []
    for name, path in sorted(p.benchmarks.items()):
        got, counts = load_items(name, path, limit=p.limit, seed=p.seed)
        budget = int(p.max_new_tokens.get(name, 2048))
        items += render_items(got, tok.apply_chat_template, thinking=p.thinking, max_new_tokens={name: budget})
        sets.append({"benchmark": name, "source": str(path), **counts, "max_new_tokens": budget})
        log.info("%s: %d items of %d rows (%d left out: unsupported IFEval instructions)", name,
                 counts["items"], counts["rows"], counts["skipped_unsupported"])
    with open(snakemake.output.item_file, "w") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    write_table(pl.DataFrame(sets), snakemake.output.sets, BenchmarkItemSets)
