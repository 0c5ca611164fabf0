# Stage: pinned downloads (paper-scale configs, config/bonsai-*.yaml). Every file the paper's
# inputs come from (upstream probe sets and patches at a fixed commit, benchmark datasets at a
# fixed hub revision) is a rule output under results/downloads/, checked against its sha256;
# model GGUFs are downloaded by `download_model` (models.smk). Sources are described in
# neagari/workflow/downloads.py; any of them may be a local `path:` instead, for offline machines.
# Downloads run on the machine Snakemake runs on (localrules): cluster nodes often have no
# network. Nothing here touches the network while the DAG is built.
from neagari.workflow import downloads as dl

dl.check_downloads_config(config)
DOWNLOADS = config["downloads"]
DOWNLOAD_FILES = DOWNLOADS["files"]
DERIVED_PROBES = DOWNLOADS["derived"]


localrules:
    download_file,
    derive_probes,
    downloads,


rule download_file:
    output:
        file="results/downloads/{name}",
    params:
        spec=lambda wc: download_source(DOWNLOAD_FILES[wc.name]),
        key=lambda wc: ["downloads", "files", wc.name],
        upstream=DOWNLOADS.get("upstream"),  # optional: only upstream sources need it
        allow_unpinned=dl.allow_unpinned(config),
    wildcard_constraints:
        name=wildcard_choice(list(DOWNLOAD_FILES)),
    log:
        "logs/downloads/{name}.log",
    benchmark:
        "logs/downloads/{name}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=60,
    script:
        "../scripts/download_file.py"


rule derive_probes:
    input:
        files=lambda wc: [dl.download_path(k) for k in dl.derived_keys(DERIVED_PROBES[wc.name])],
    output:
        probes="results/downloads/derived/{name}.json",
    params:
        spec=lambda wc: DERIVED_PROBES[wc.name],
        download_keys=lambda wc: dl.derived_keys(DERIVED_PROBES[wc.name]),
    wildcard_constraints:
        name=wildcard_choice(list(DERIVED_PROBES)),
    log:
        "logs/downloads/derived/{name}.log",
    benchmark:
        "logs/downloads/derived/{name}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/download_derive_probes.py"


# `snakemake downloads`: fetch everything once, e.g. on a login node before a cluster run.
rule downloads:
    input:
        dl.download_targets(config),
