"""Rule use_shipped_float: a shipped fp model's float file, checked against its record (the model's
GGUF and record as use_shipped_model checks them; the float file against the record's float_sha256)
and copied beside the workflow's models for the posthoc models that round it."""
import shutil

from neagari.workflow.shipped import verify_shipped, verify_shipped_float
from neagari.workflow.smk import rule_context

p, i, o = snakemake.params, snakemake.input, snakemake.output
with rule_context(snakemake, config_keys=["models"]) as log:
    verify_shipped(i.gguf, p.sha256, p.record, p.key)
    sha = verify_shipped_float(i.float, p.record, p.key)
    shutil.copyfile(i.float, o.float)
    log.info("%s: sha256 %s as its record names", i.float, sha)
