"""Rules ship_model and ship_float_model: one trained embedded model copied to resources/models/ with
its record directory (neagari/workflow/shipped.py; resources/models/README.md)."""
import json
import shutil
from pathlib import Path

from neagari.hashing import sha256_file
from neagari.workflow.provenance import git_state, now_iso
from neagari.workflow.shipped import LOSS, RECORD, make_record, training_record, training_seconds, verify_shipped
from neagari.workflow.smk import rule_context

p, i, o = snakemake.params, snakemake.input, snakemake.output


model = snakemake.wildcards.model
with rule_context(snakemake, config_keys=["embedded", "models"], seed=p.embedded["seed"]) as log:
    shipped = Path(o.gguf).parent
    record = Path(o.record)
    record.mkdir(parents=True, exist_ok=True)
    copies = {o.gguf: i.gguf, record / LOSS: i.history, record / "loss.png": i.figure,
              record / "llama_crosscheck.parquet": i.crosscheck, record / "train.log": i.train_log}
    if "float" in o.keys():
        copies[o.float] = i.float
    for dst, src in copies.items():
        shutil.copyfile(src, dst)
    files = {Path(dst).relative_to(shipped).as_posix(): sha256_file(dst) for dst in copies}
    gguf_sha = files[f"{model}.gguf"]
    doc = make_record(
        model=model, variant=p.variant, embedded=p.embedded, files=files, gguf_sha256=gguf_sha,
        float_sha256=files.get(f"{model}.f16.gguf"), corpus_sha256=sha256_file(i.corpus),
        tokenizer_sha256=sha256_file(i.tokenizer), trained=training_record(i.get("float", i.gguf)),
        wall_time_s=training_seconds(i.history), git=git_state(snakemake.scriptdir), shipped_at=now_iso())
    (record / RECORD).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    verify_shipped(o.gguf, gguf_sha, record, ["models", model, "shipped"])  # as the workflow will check it
    log.info("%s: sha256 %s, %d files in %s", o.gguf, gguf_sha, len(files), record)
