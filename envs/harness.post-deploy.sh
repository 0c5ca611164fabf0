#!/usr/bin/env bash
# Snakemake runs this once in a new environment of envs/harness.yaml (its post-deploy script). It
# runs the checkout's envs/neagari.post-deploy.sh, which installs the neagari package editable from
# the checkout; the checkout is found as that script finds it (NEAGARI_WORKFLOW_DIR, else the
# working directory), since Snakemake runs a copy of this script from .snakemake/conda/.
set -euo pipefail

src="${NEAGARI_WORKFLOW_DIR:-$PWD}"
if [ ! -f "$src/envs/neagari.post-deploy.sh" ]; then
    echo "harness.post-deploy.sh: $src is not the neagari workflow's checkout (no envs/neagari.post-deploy.sh);" \
         "set NEAGARI_WORKFLOW_DIR to the workflow's directory" >&2
    exit 1
fi
exec bash "$src/envs/neagari.post-deploy.sh"
