# Stage 4: searches (PAPER.md §5). One rule runs every kind of search: the sequential five-domain
# pipeline (pass1: weight XOR; pass2: scale moves on top), isolation ablations, the lambda sweep,
# targeted borderline/focused runs, null baselines and the random-flip null. `search_spec` in
# common.smk says what each (stage, run) starts from and how it is configured.


rule randomize_null_model:
    input:
        model="results/models/{model}.gguf",
    output:
        gguf="results/models/null/{model}-s{seed}.gguf",
    wildcard_constraints:
        seed=r"\d+",
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
        model=lambda wc: search_spec(wc.model, wc.stage, wc.run)["model"],
        probes=lambda wc: search_spec(wc.model, wc.stage, wc.run)["probes"],
        controls=lambda wc: search_spec(wc.model, wc.stage, wc.run)["controls"],
        promoted=lambda wc: search_spec(wc.model, wc.stage, wc.run)["promoted"],
        iterations_from=lambda wc: search_spec(wc.model, wc.stage, wc.run)["iterations_from"],
    output:
        patch="results/search/{model}/{stage}/{run}/patch.json",
        upstream="results/search/{model}/{stage}/{run}/patch.upstream.json",
        iterations="results/search/{model}/{stage}/{run}/iterations.parquet",
        summary="results/search/{model}/{stage}/{run}/summary.json",
        promoted="results/search/{model}/{stage}/{run}/promoted.json",
    params:
        spec=lambda wc: search_spec(wc.model, wc.stage, wc.run),
        common=lambda wc: {k: SEARCH[k] for k in ("layers", "projections", "group_sampling", "window",
                                                   "min_rate", "speculate", "checkpoint_every", "scale_bits")},
        promoted_cap=SEARCH.get("pipeline", {}).get("promoted_cap", 30),
        device=config["device"],
        dtype=config.get("weights_dtype", "fp32"),
    wildcard_constraints:
        stage="pass1|pass2|isolated|lambda|targeted|nullbase|randomflip",
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
        model=lambda wc: search_spec(wc.model, wc.stage, wc.run)["model"],
        patch="results/search/{model}/{stage}/{run}/patch.json",
    output:
        gguf="results/patched/{model}/{stage}/{run}.gguf",
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
