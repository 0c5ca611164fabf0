# Stage 1: the models. A fixture model is a random Qwen3 Q1_0 GGUF with a real BPE tokenizer.


rule build_fixture_model:
    output:
        gguf="results/models/{model}.gguf",
    params:
        spec=lambda wc: config["models"][wc.model]["fixture"],
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
