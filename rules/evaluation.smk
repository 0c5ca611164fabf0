# Stage 5: evaluation of the patched models. Held-out verbatim extraction of each targeted patch
# with our engine (PAPER.md §6 item 8) and base-vs-patched benchmarks of the final five-domain
# pipeline model through llama.cpp (§6 item 7).

# The paper's settings; fixed here, not in the config.
HELDOUT_MAX_NEW_TOKENS = 80  # generation budget of the held-out verbatim probes
HELDOUT_THRESHOLD = 0.20  # pre-registered COPY -> PASS conversion rate for "generalizes"
BENCH_N_CTX = 8192  # llama.cpp server context
BENCH_SEED = 42  # llama.cpp server seed
BENCH_MAX_NEW_TOKENS = None  # None: the longest answer plus 4 tokens, as the quality stage
# At paper scale (config `evaluation.benchmarks`): GSM8K, IFEval, MMLU, MuSR from the downloads,
# rendered through each model's chat template, instead of the embedded model's evaluation sets.
EVAL_CFG = config["evaluation"]
BENCHMARK_FILES = EVAL_CFG["benchmarks"]
# With `evaluation.harness`: the same tables through lm-evaluation-harness against llama.cpp's
# server (neagari.evaluation.harness), instead of our items and scorers; its own environment, as
# lm-eval pulls in datasets and pyarrow.
HARNESS = EVAL_CFG["harness"]
HARNESS_ENV = "../envs/harness.yaml"
HELDOUT_VERBATIM = config_path(EVAL_CFG["heldout_verbatim"])
EVAL_FITNESSES = SEARCH["targeted"]["fitnesses"] if SEARCH else []
# "patched" = the fully patched model of the five-domain pipeline: its last pass-2 domain (in pass
# 2's order), or the last pass-1 one when pass 2 is off
EVAL_FINAL_STAGE, EVAL_FINAL_DOMAIN = final_run(SEARCH) if SEARCH else (None, None)
# what `rule all` asks of this stage
EVAL_TARGETS = [
    f"results/eval/{m}/heldout/{f}.{kind}.parquet"
    for m in SEARCH_MODELS
    for f in EVAL_FITNESSES
    for kind in ("crosstab", "summary", "generations")
] + [f"results/eval/{m}/bench/comparison.parquet" for m in SEARCH_MODELS if EVAL_CFG["run_benchmarks"]]


rule eval_heldout_verbatim:
    input:
        base="results/models/{model}.gguf",
        patched="results/patched/{model}/targeted/{fitness}.gguf",
        heldout=HELDOUT_VERBATIM,
        probes=lambda wc: f"results/probes/{wc.model}/{SEARCH['targeted']['probes']}.json",
    output:
        table="results/eval/{model}/heldout/{fitness}.parquet",
        generations="results/eval/{model}/heldout/{fitness}.generations.parquet",
    params:
        max_new_tokens=HELDOUT_MAX_NEW_TOKENS,
        batch_size=config["quality"]["batch_size"],
        device=config["device"],
        dtype=config["weights_dtype"],
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
        fitness=wildcard_choice(EVAL_FITNESSES),
    threads: 1
    log:
        "logs/eval/{model}/heldout/{fitness}.log",
    benchmark:
        "logs/eval/{model}/heldout/{fitness}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/eval_heldout_verbatim.py"


rule eval_heldout_summary:
    input:
        table="results/eval/{model}/heldout/{fitness}.parquet",
    output:
        crosstab="results/eval/{model}/heldout/{fitness}.crosstab.parquet",
        summary="results/eval/{model}/heldout/{fitness}.summary.parquet",
    params:
        threshold=HELDOUT_THRESHOLD,
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
        fitness=wildcard_choice(EVAL_FITNESSES),
    log:
        "logs/eval/{model}/heldout/{fitness}.summary.log",
    benchmark:
        "logs/eval/{model}/heldout/{fitness}.summary.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/eval_heldout_summary.py"


rule build_benchmark_items:
    input:
        model="results/models/{model}.gguf",
        files=[dl.download_path(k) for k in BENCHMARK_FILES.values()],
    output:
        item_file="results/eval/{model}/bench/items.jsonl",
        sets="results/eval/{model}/bench/item_sets.parquet",
    params:
        benchmarks={name: dl.download_path(k) for name, k in BENCHMARK_FILES.items()},
        limit=EVAL_CFG["benchmark_limit"],
        thinking=EVAL_CFG["thinking"],
        max_new_tokens=EVAL_CFG["max_new_tokens"],
        seed=BENCH_SEED,
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
    log:
        "logs/eval/{model}/bench/items.log",
    benchmark:
        "logs/eval/{model}/bench/items.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/build_benchmark_items.py"


if HARNESS["enabled"]:

    rule eval_benchmark:
        input:
            model=lambda wc: (
                f"results/models/{wc.model}.gguf"
                if wc.variant == "base"
                else f"results/patched/{wc.model}/{EVAL_FINAL_STAGE}/{EVAL_FINAL_DOMAIN}.gguf"
            ),
            tables=[dl.download_path(k) for k in BENCHMARK_FILES.values()],
            punkt_tab=[dl.download_path(HARNESS["punkt_tab"])] if HARNESS["punkt_tab"] else [],
        output:
            table="results/eval/{model}/bench/{variant}.parquet",
            # task files, lm-eval's results and sample logs, server and lm-eval logs
            samples=directory("results/eval/{model}/bench/{variant}.harness"),
        params:
            benchmarks={name: dl.download_path(k) for name, k in BENCHMARK_FILES.items()},
            tasks=HARNESS["tasks"],
            # lm-eval's response cache (resumes per item), outside the outputs so that a rerun keeps it
            cache_dir=lambda wc: f"results/eval/{wc.model}/bench/{wc.variant}.harness-cache",
            max_new_tokens=EVAL_CFG["max_new_tokens"],
            limit=EVAL_CFG["benchmark_limit"],
            thinking=EVAL_CFG["thinking"],
            n_ctx=BENCH_N_CTX,
            seed=BENCH_SEED,
            n_gpu_layers=EVAL_CFG["n_gpu_layers"],
            startup_timeout_s=HARNESS["startup_timeout_s"],
            request_timeout_s=HARNESS["request_timeout_s"],
        wildcard_constraints:
            model=wildcard_choice(SEARCH_MODELS),
            variant="base|patched",
        # the server's llama.cpp threads (see the rule below)
        threads: 1
        log:
            "logs/eval/{model}/bench/{variant}.log",
        benchmark:
            "logs/eval/{model}/bench/{variant}.bench.tsv"
        conda:
            HARNESS_ENV
        resources:
            mem_mb=4000,
            runtime=120,
        script:
            "../scripts/eval_benchmark_harness.py"

else:

    rule eval_benchmark:
        input:
            model=lambda wc: (
                f"results/models/{wc.model}.gguf"
                if wc.variant == "base"
                else f"results/patched/{wc.model}/{EVAL_FINAL_STAGE}/{EVAL_FINAL_DOMAIN}.gguf"
            ),
            eval_sets=lambda wc: (
                f"results/eval/{wc.model}/bench/items.jsonl"
                if BENCHMARK_FILES
                else "results/data/eval/eval_sets.jsonl"
            ),
        output:
            table="results/eval/{model}/bench/{variant}.parquet",
        params:
            n_ctx=BENCH_N_CTX,
            seed=BENCH_SEED,
            max_new_tokens=BENCH_MAX_NEW_TOKENS,
            n_gpu_layers=EVAL_CFG["n_gpu_layers"],
        wildcard_constraints:
            model=wildcard_choice(SEARCH_MODELS),
            variant="base|patched",
        # llama.cpp threads spin while they wait: on a busy machine more threads than free cores
        # make a small model 30x slower. One is right for the embedded models; raise it for 1.7B/8B.
        threads: 1
        log:
            "logs/eval/{model}/bench/{variant}.log",
        benchmark:
            "logs/eval/{model}/bench/{variant}.bench.tsv"
        conda:
            ENV
        resources:
            mem_mb=4000,
            runtime=120,
        script:
            "../scripts/eval_benchmark.py"


rule eval_benchmark_compare:
    input:
        base="results/eval/{model}/bench/base.parquet",
        patched="results/eval/{model}/bench/patched.parquet",
    output:
        table="results/eval/{model}/bench/comparison.parquet",
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
    log:
        "logs/eval/{model}/bench/comparison.log",
    benchmark:
        "logs/eval/{model}/bench/comparison.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/eval_benchmark_compare.py"
