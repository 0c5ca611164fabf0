"""Rule calibrate_probes: base-model calibration of one probe set (PAPER.md §3), and its token
report (the probes whose gap compares a shared or a whitespace token)."""
import json
from pathlib import Path

from neagari.engine.engine import Engine
from neagari.search.calibrate import calibrate_document, token_report
from neagari.search.probes import load_probes
from neagari.search.schemas import ProbeTokenIssues
from neagari.tables import write_table
from neagari.workflow.smk import rule_context

p = snakemake.params
with rule_context(snakemake, config_keys=["probe_sets", "score"], device=p.device, dtype=p.dtype) as log:
    engine = Engine.load(snakemake.input.model, device=p.device, dtype=p.dtype)
    doc = json.loads(Path(snakemake.input.probes).read_text())
    out = calibrate_document(engine, doc, batch_size=p.batch_size, upstream_controls=p.upstream_controls,
                             first_token=p.first_token)
    Path(snakemake.output.probes).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    log.info("%s", out["_calibration"])
    issues = token_report(load_probes(snakemake.output.probes), engine.tokenizer, snakemake.wildcards.probeset)
    write_table(issues, snakemake.output.tokens, ProbeTokenIssues)
    for r in issues.iter_rows(named=True):
        why = [k for k in ("same_first_token", "correct_whitespace", "wrong_whitespace") if r[k]]
        log.warning("token report: %s %r vs %r scored at ids %d/%d (%r/%r): %s", r["name"], r["correct"],
                    r["wrong"], r["correct_id"], r["wrong_id"], r["correct_token"], r["wrong_token"], ", ".join(why))
    log.info("token report: %d of %d probes scored at a shared or whitespace token", issues.height,
             out["_calibration"]["source_probes"])
