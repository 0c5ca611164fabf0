# Shipping the embedded family (`make model`, config/model.yaml): each model trained here is copied
# to resources/models/ with its record directory (record.json: what made it, the sha256 of every
# shipped file; the loss table and figure, the llama.cpp cross-check, the training log), to be
# used by later runs as `source: shipped` (rule use_shipped_model). resources/models/README.md.


localrules:
    ship_model,
    ship_float_model,
    ship,


rule ship:
    input:
        ship_targets(),


rule ship_model:
    input:
        **ship_inputs(),
    output:
        gguf=f"{SHIPPED_DIR}/{{model}}.gguf",
        record=directory(f"{SHIPPED_DIR}/{{model}}.record"),
    params:
        variant=lambda wc: config["models"][wc.model]["variant"],
        embedded=config["embedded"],
    wildcard_constraints:
        model=wildcard_choice(TRAINED_QAT_MODELS),
    log:
        "logs/models/{model}.ship.log",
    benchmark:
        "logs/models/{model}.ship.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/ship_model.py"


use rule ship_model as ship_float_model with:
    input:
        **ship_inputs(with_float=True),
    output:
        gguf=f"{SHIPPED_DIR}/{{model}}.gguf",
        float=f"{SHIPPED_DIR}/{{model}}.f16.gguf",
        record=directory(f"{SHIPPED_DIR}/{{model}}.record"),
    wildcard_constraints:
        model=wildcard_choice(TRAINED_FP_MODELS),
