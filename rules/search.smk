# Stage 4: searches (PAPER.md §5). One rule runs every kind of search: the sequential five-domain
# pipeline (pass1: weight XOR; pass2: scale moves on top), isolation ablations, the lambda sweep,
# targeted borderline/focused runs, null baselines and the random-flip null. Each run's record
# (neagari.workflow.runs, RUNS in common.smk) says what it starts from and how it is configured.
from neagari.workflow.runs import null_model_params

# The settings every run of the config shares
SEARCH_COMMON = (
    "layers",
    "projections",
    "group_sampling",
    "window",
    "min_rate",
    "speculate",
    "checkpoint_every",
    "scale_bits",
)
PIPELINE_PROMOTION = {k: SEARCH["pipeline"][k] for k in ("promotion", "max_controls")} if SEARCH else None
# search.ternary_moves reaches the searches through each run's record (search_settings), and the
# null mode the null models through NULL_MODEL_PARAMS; both are absent at their defaults
# (neagari.workflow.runs), so that configs that leave them alone keep their params.
NULL_MODEL_PARAMS = null_model_params(config)


# Q1_0 MLP sign bits flipped with probability 1/2; Q2_0 MLP codes redrawn by
# search.null_baseline.mode (uniform over -d/0/+d, or signs only with the zero pattern kept)
rule randomize_null_model:
    input:
        model="results/models/{model}.gguf",
    output:
        gguf="results/models/null/{model}-s{seed}.gguf",
    params:
        **NULL_MODEL_PARAMS,
    wildcard_constraints:
        seed=r"\d+",
    threads: 1
    log:
        "logs/models/null/{model}-s{seed}.log",
    benchmark:
        "logs/models/null/{model}-s{seed}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/randomize_null_model.py"


rule search:
    input:
        model=lambda wc: run_of(wc).start,
        probes=lambda wc: run_of(wc).probes,
        controls=lambda wc: run_of(wc).controls,
        promoted=lambda wc: run_of(wc).promoted,
        iterations_from=lambda wc: run_of(wc).iterations_from,
    output:
        patch="results/search/{model}/{stage}/{run}/patch.json",
        upstream="results/search/{model}/{stage}/{run}/patch.upstream.json",
        iterations="results/search/{model}/{stage}/{run}/iterations.parquet",
        summary="results/search/{model}/{stage}/{run}/summary.json",
        promoted="results/search/{model}/{stage}/{run}/promoted.json",
    params:
        # SearchConfig field -> value; the fields a run does not set keep the search's defaults
        settings=lambda wc: {**{k: SEARCH[k] for k in SEARCH_COMMON}, **run_of(wc).search_settings()},
        # pipeline runs carry controls on to the next domain (neagari.search.promotion); others none
        promotion=lambda wc: PIPELINE_PROMOTION if wc.stage in ("pass1", "pass2") else None,
        device=config["device"],
        dtype=config["weights_dtype"],
    wildcard_constraints:
        stage="|".join(STAGES),
    threads: 1
    log:
        "logs/search/{model}/{stage}/{run}.log",
    benchmark:
        "logs/search/{model}/{stage}/{run}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    script:
        "../scripts/search.py"


rule assemble_patch:
    input:
        model=lambda wc: run_of(wc).start,
        patch="results/search/{model}/{stage}/{run}/patch.json",
    output:
        gguf="results/patched/{model}/{stage}/{run}.gguf",
    threads: 1
    log:
        "logs/patched/{model}/{stage}/{run}.log",
    benchmark:
        "logs/patched/{model}/{stage}/{run}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/assemble_patch.py"
