# The Neagari paper, regenerated. `make paper` runs this with config/config.yaml; see README.md.
import os

from snakemake.utils import min_version

min_version("9.0")


# The default config unless one is given: --configfile would otherwise be merged into it. The
# repository's, whatever the working directory.
if not config:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/downloads.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/probes.smk"
include: "rules/scoring.smk"
include: "rules/quality.smk"
include: "rules/search.smk"
include: "rules/audits.smk"
include: "rules/sensitivity.smk"
include: "rules/evaluation.smk"
include: "rules/terrain.smk"
include: "rules/subspace.smk"
include: "rules/common_report.smk"
include: "rules/figures.smk"
include: "rules/paper.smk"
include: "rules/ship.smk"


rule all:
    input:
        all_targets(),
    default_target: True
