# Stage 3: model quality. Held-out loss, exact-match accuracy per domain, share of wrong probes,
# held-out verbatim outcomes: does the embedded model meet the band the experiments need?


rule evaluate_quality:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        model="results/models/{model}.gguf",
        heldout="results/data/corpus.heldout.jsonl",
        eval_sets="results/data/eval/eval_sets.jsonl",
        verbatim="results/data/heldout/verbatim_heldout.json",
        probes=lambda wc: expand("results/probes/{model}/{probeset}.json", model=wc.model, probeset=PROBE_SETS),
    output:
        summary="results/quality/{model}/summary.parquet",
        eval_items="results/quality/{model}/eval_items.parquet",
        verbatim="results/quality/{model}/verbatim_heldout.parquet",
        copying="results/quality/{model}/copy.parquet",
    params:
        n_heldout_texts=config["quality"]["n_heldout_texts"],
        n_copy_lists=config["quality"]["n_copy_lists"],
        seed=config["embedded"]["seed"],
        batch_size=config["quality"]["batch_size"],
        device=config["device"],
        dtype=config["weights_dtype"],
    threads: 1
    log:
        "logs/quality/{model}.log",
    benchmark:
        "logs/quality/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/evaluate_quality.py"


rule crosscheck_llama:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        model="results/models/{model}.gguf",
        eval_sets="results/data/eval/eval_sets.jsonl",
    output:
        table="results/quality/{model}/llama_crosscheck.parquet",
    params:
        n_prompts=20,
        max_new_tokens=30,
    threads: 1
    log:
        "logs/quality/{model}.llama.log",
    benchmark:
        "logs/quality/{model}.llama.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/crosscheck_llama.py"


rule quality_report:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        summaries=expand("results/quality/{model}/summary.parquet", model=EMBEDDED_MODELS),
        verbatim=expand("results/quality/{model}/verbatim_heldout.parquet", model=EMBEDDED_MODELS),
        histories=expand("results/training/{model}.loss.parquet", model=EMBEDDED_MODELS),
        crosschecks=expand("results/quality/{model}/llama_crosscheck.parquet", model=EMBEDDED_MODELS),
        copies=expand("results/quality/{model}/copy.parquet", model=EMBEDDED_MODELS),
    output:
        table="results/quality/quality.parquet",
        bars="results/quality/bars.parquet",
        report=report("results/quality/report.md", caption="../report/quality.rst", category="Model quality"),
    params:
        band=config["quality"]["wrong_target_band"],
    threads: 1
    log:
        "logs/quality/report.log",
    benchmark:
        "logs/quality/report.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/quality_report.py"
