"""Rule build_task_sets: probe sets (upstream schema), verbatim sets and evaluation sets."""
import json
from pathlib import Path

from neagari.embedded import toydata
from neagari.workflow.smk import rule_context

p = snakemake.params
out = snakemake.output


def dump(obj, path):
    Path(path).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


with rule_context(snakemake, config_keys=["embedded"], seed=p.seed) as log:
    probe_sets = toydata.build_probe_sets(p.seed)
    for path in out.probes:
        dump(probe_sets[Path(path).stem], path)
    verbatim_train, verbatim_heldout = toydata.build_verbatim_sets(p.seed)
    dump(verbatim_train, out.verbatim_train)
    dump(verbatim_heldout, out.verbatim_heldout)
    eval_sets = toydata.build_eval_sets(p.seed, p.n_eval)
    with open(out.eval_sets, "w") as f:
        for items in eval_sets.values():
            for it in items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
    log.info("probe sets %s; %d held-out verbatim probes; eval items %s", sorted(probe_sets),
             len(verbatim_heldout["probes"]), {d: len(v) for d, v in eval_sets.items()})
