# Stage 1: the models. Fixture models are random Qwen3 Q1_0 GGUFs (tests, smoke runs); embedded
# models are trained here from the procedural corpus, once with 1-bit QAT and once in full
# precision rounded post hoc (the paper's §8 cross-quantization comparison); shipped models are
# embedded models trained once (`make model`, rules/ship.smk) and kept in resources/models/, checked
# by sha256 before use. Downloaded models (source: download, e.g. PrismML's Bonsai GGUFs) come from
# a pinned source, checked by sha256.

from neagari.workflow import downloads as dl

DOWNLOAD_MODELS = [m for m, s in config["models"].items() if s["source"] == "download"]


localrules:
    download_model,
    use_shipped_model,


# A model kept in the repository: its GGUF and training-loss table, checked against the config's
# sha256 and the record (neagari.workflow.shipped), then copied where trained models go.
rule use_shipped_model:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        gguf=lambda wc: shipped_file(wc.model, "path"),
        history=lambda wc: os.path.join(shipped_file(wc.model, "record"), "loss.parquet"),
        record=lambda wc: os.path.join(shipped_file(wc.model, "record"), "record.json"),
    output:
        gguf="results/models/{model}.gguf",
        history="results/training/{model}.loss.parquet",
    params:
        sha256=lambda wc: config["models"][wc.model]["shipped"]["sha256"],
        record=lambda wc: shipped_file(wc.model, "record"),
        key=lambda wc: ["models", wc.model, "shipped"],
        variant=lambda wc: config["models"][wc.model]["variant"],
    wildcard_constraints:
        model=wildcard_choice(SHIPPED_MODELS),
    log:
        "logs/models/{model}.shipped.log",
    benchmark:
        "logs/models/{model}.shipped.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/use_shipped_model.py"


# The float (F16) file of a shipped fp model, for the posthoc models that round it: the model is
# checked as use_shipped_model checks it, the float file against the sha256 its record names.
rule use_shipped_float:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        gguf=lambda wc: shipped_file(wc.model, "path"),
        float=lambda wc: shipped_float_path(wc.model),
        record=lambda wc: os.path.join(shipped_file(wc.model, "record"), "record.json"),
    output:
        float="results/models/{model}.f16.gguf",
    params:
        sha256=lambda wc: config["models"][wc.model]["shipped"]["sha256"],
        record=lambda wc: shipped_file(wc.model, "record"),
        key=lambda wc: ["models", wc.model, "shipped"],
    wildcard_constraints:
        model=wildcard_choice(SHIPPED_FLOAT_MODELS),
    log:
        "logs/models/{model}.shipped-float.log",
    benchmark:
        "logs/models/{model}.shipped-float.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/use_shipped_float.py"


# A posthoc model: the float file of its fp model rounded to Q1_0 or Q2_0 by llama.cpp's rule
# (neagari.engine.requantize; the same bytes as llama.cpp's quantizer). Its training is its fp
# model's: the loss table is that one's, under this model's name.
rule round_posthoc:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        float=lambda wc: f"results/models/{config['models'][wc.model]['posthoc']['from']}.f16.gguf",
        history=lambda wc: f"results/training/{config['models'][wc.model]['posthoc']['from']}.loss.parquet",
    output:
        gguf="results/models/{model}.gguf",
        history="results/training/{model}.loss.parquet",
    params:
        format=lambda wc: config["models"][wc.model]["posthoc"]["format"],
    wildcard_constraints:
        model=wildcard_choice(POSTHOC_MODELS),
    log:
        "logs/models/{model}.posthoc.log",
    benchmark:
        "logs/models/{model}.posthoc.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/round_posthoc.py"


rule download_model:
    output:
        gguf="results/models/{model}.gguf",
    params:
        spec=lambda wc: download_source(config["models"][wc.model]["download"]),
        key=lambda wc: ["models", wc.model, "download"],
        upstream=config["downloads"].get("upstream"),  # optional: only upstream sources need it
        allow_unpinned=dl.allow_unpinned(config),
    wildcard_constraints:
        model=wildcard_choice(DOWNLOAD_MODELS),
    log:
        "logs/models/{model}.download.log",
    benchmark:
        "logs/models/{model}.download.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=120,
    script:
        "../scripts/download_file.py"


rule build_fixture_model:
    output:
        gguf="results/models/{model}.gguf",
    params:
        spec=lambda wc: config["models"][wc.model]["fixture"],
    wildcard_constraints:
        model=wildcard_choice(FIXTURE_MODELS),
    log:
        "logs/models/{model}.log",
    benchmark:
        "logs/models/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/build_fixture_model.py"


rule train_tokenizer:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        corpus="results/data/corpus.train.jsonl",
    output:
        tokenizer="results/models/embedded/tokenizer.json",
    params:
        vocab_size=config["embedded"]["tokenizer"]["vocab_size"],
    log:
        "logs/models/embedded/tokenizer.log",
    benchmark:
        "logs/models/embedded/tokenizer.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/train_tokenizer.py"


# Two rules share the training script: it writes the Q1_0 file (output gguf, QAT models) or the
# float F16 file (output float, fp models) that quantize_posthoc rounds.
rule train_embedded_model:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        corpus="results/data/corpus.train.jsonl",
        heldout="results/data/corpus.heldout.jsonl",
        tokenizer="results/models/embedded/tokenizer.json",
    output:
        gguf="results/models/{model}.gguf",
        history="results/training/{model}.loss.parquet",
    params:
        variant=lambda wc: config["models"][wc.model]["variant"],
        architecture=config["embedded"]["architecture"],
        # Where and how often to checkpoint changes no weight: the script reads those two keys from
        # the config, so that they are no params and trigger no rerun.
        train={k: v for k, v in config["embedded"]["train"].items() if not k.startswith("checkpoint_")},
        seed=config["embedded"]["seed"],
    wildcard_constraints:
        model=wildcard_choice(TRAINED_QAT_MODELS),
    threads: config["embedded"]["train"]["threads"]
    log:
        "logs/models/{model}.train.log",
    benchmark:
        "logs/models/{model}.train.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=6000,
        # about 1.5 s per step on one CPU core at the default shape (BENCHMARKS.md), at least an hour
        runtime=max(60, config["embedded"]["train"]["steps"] * 3 // 120),
    script:
        "../scripts/train_embedded_model.py"


use rule train_embedded_model as train_embedded_float with:
    output:
        float="results/models/{model}.f16.gguf",
        history="results/training/{model}.loss.parquet",
    wildcard_constraints:
        model=wildcard_choice(TRAINED_FP_MODELS),


# An fp model's Q1_0 file: its float file's linear weights rounded by llama.cpp's rule
# (neagari.engine.requantize; the same bytes as llama.cpp's quantizer).
rule quantize_posthoc:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        float="results/models/{model}.f16.gguf",
    output:
        gguf="results/models/{model}.gguf",
    wildcard_constraints:
        model=wildcard_choice(TRAINED_FP_MODELS),
    log:
        "logs/models/{model}.quantize.log",
    benchmark:
        "logs/models/{model}.quantize.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/quantize_posthoc.py"
