"""Rule audit_published: §7.1, §7.5 and §7.6 regenerated from upstream-format patch files alone
(the paper's published patches, or any search's patch.upstream.json); no model needed."""

from neagari.analysis import audits, crossing
from neagari.search.patch import read_patch
from neagari.workflow.smk import rule_context
from neagari.analysis.schemas import AcceptanceTable, BoundaryCrossingFlips, BoundaryCrossingSummary, MoveTypeShare
from neagari.tables import write_table

out = snakemake.output
with rule_context(snakemake, config_keys=["published_patches"]) as log:
    patches = {name: read_patch(path) for name, path in zip(snakemake.params.names, snakemake.input.patches)}
    per_flip, summary = crossing.boundary_crossing_pooled({n: p.records for n, p in patches.items()})
    write_table(per_flip, out.crossing_flips, BoundaryCrossingFlips)
    write_table(summary, out.crossing_summary, BoundaryCrossingSummary)
    write_table(audits.move_type_share({n: p.moves for n, p in patches.items()}), out.scale_share, MoveTypeShare)
    flags = {}
    for name, patch in patches.items():
        # over the iterations actually run, so an auto-terminated search is not padded with rejects
        recorded = audits.recorded_flags(patch)
        if recorded is None:
            log.warning("%s: no count of the iterations run; left out of the acceptance table", name)
        else:
            flags[name] = recorded
    write_table(audits.acceptance_table(flags, snakemake.params.checkpoints, snakemake.params.window),
                out.acceptance, AcceptanceTable)
    log.info("audited %d published patches\n%s", len(patches), summary)
