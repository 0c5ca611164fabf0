"""Rule audit_published: §7.1, §7.5 and §7.6 regenerated from upstream-format patch files alone
(the paper's published patches, or any search's patch.upstream.json); no model needed."""

from neagari.analysis import audits
from neagari.search.patch import read_patch
from neagari.workflow.smk import rule_context
from neagari.analysis.schemas import AcceptanceTable, BoundaryCrossingFlips, BoundaryCrossingSummary, MoveTypeShare
from neagari.tables import write_table

out = snakemake.output
with rule_context(snakemake, config_keys=["published_patches"]) as log:
    patches = {name: read_patch(path) for name, path in zip(snakemake.params.names, snakemake.input.patches)}
    per_flip, summary = audits.boundary_crossing_pooled({n: p.records for n, p in patches.items()})
    write_table(per_flip, out.crossing_flips, BoundaryCrossingFlips)
    write_table(summary, out.crossing_summary, BoundaryCrossingSummary)
    write_table(audits.move_type_share({n: p.moves for n, p in patches.items()}), out.scale_share, MoveTypeShare)
    flags = {}
    for name, patch in patches.items():
        # an upstream patch records the iteration of each kept flip and the iterations run
        total = int(patch.metadata.get("iterations") or patch.search_config.get("iterations")
                    or patch.metadata.get("iterations_run") or 0)
        kept = {int(r["iteration"]) for r in patch.records if "iteration" in r}
        if kept and total and max(kept) == total and min(kept) >= 1:  # 1-based iteration numbers
            kept = {i - 1 for i in kept}
        if total and kept and max(kept) < total:
            flags[name] = [i in kept for i in range(total)]
        else:
            log.warning("%s: no iteration count; left out of the acceptance table", name)
    write_table(audits.acceptance_table(flags, snakemake.params.checkpoints, snakemake.params.window),
                out.acceptance, AcceptanceTable)
    log.info("audited %d published patches\n%s", len(patches), summary)
