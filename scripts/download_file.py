"""Rules download_file and download_model: one pinned download (neagari/workflow/downloads.py), checked
against its sha256 before it is kept. The source (and so where the bytes came from) is a param,
so it is in the provenance record; the log holds the hash it got."""
import json

from neagari.workflow.downloads import fetch
from neagari.workflow.smk import rule_context

p = snakemake.params
with rule_context(snakemake, config_keys=["downloads"]) as log:
    record = fetch(p.spec, snakemake.output[0], key=p.key, upstream=p.upstream,
                   allow_unpinned=p.allow_unpinned, log=log)
    log.info("fetched: %s", json.dumps(record, sort_keys=True))
