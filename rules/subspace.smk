# Stage: subspace sweep (issue 6, seed 001). Which residual-stream subspaces each patch's weight and
# activation deltas live in, against random subspaces of the same rank: candidate bases once per
# model from its weights, one sweep per patch, then per model the summary, conclusion and scatter.

SUBSPACE = config.get("subspace", {})


def subspace_models():
    return SUBSPACE.get("models", SEARCH_MODELS) if SUBSPACE else []


def subspace_runs(model):
    """(stage, run) of every patch swept on one model: the configured stages, the targeted runs
    filtered to the configured fitnesses."""
    stages = SUBSPACE.get("stages", ["pass1", "pass2", "targeted", "randomflip"])
    targeted = SUBSPACE.get("targeted", ["borderline", "focused"])
    return [(s, r) for s, r in search_runs(model) if s in stages and (s != "targeted" or r in targeted)]


def subspace_tables(wildcards):
    return [f"results/subspace/{wildcards.model}/{s}/{r}.per_layer.parquet" for s, r in subspace_runs(wildcards.model)]


def subspace_targets():
    targets = []
    for m in subspace_models():
        targets += [f"results/subspace/{m}/summary.parquet", f"results/subspace/{m}/conclusion.md",
                    f"results/figures/subspace/{m}.scatter.png"]
    return targets


rule subspace_bases:
    input:
        model="results/models/{model}.gguf",
    output:
        bases="results/subspace/{model}/bases.pt",
    params:
        ranks=SUBSPACE.get("ranks", [8, 32]),
        broad_rank=SUBSPACE.get("broad_rank", 64),
        seed=config["seed"],
        device=config["device"],
        dtype=config.get("weights_dtype", "fp32"),
    log:
        "logs/subspace/{model}/bases.log",
    benchmark:
        "logs/subspace/{model}/bases.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/subspace_bases.py"


rule subspace_sweep:
    input:
        model=lambda wc: search_spec(wc.model, wc.stage, wc.run)["model"],
        patch="results/search/{model}/{stage}/{run}/patch.json",
        bases="results/subspace/{model}/bases.pt",
        probes=lambda wc: search_spec(wc.model, wc.stage, wc.run)["probes"],
        controls=lambda wc: f"results/probes/{wc.model}/{SUBSPACE.get('control_set', 'controls')}.json",
    output:
        table="results/subspace/{model}/{stage}/{run}.per_layer.parquet",
    params:
        ranks=SUBSPACE.get("ranks", [8, 32]),
        n_random=SUBSPACE.get("n_random", 200),
        batch_size=SUBSPACE.get("batch_size", 32),
        seed=config["seed"],
        device=config["device"],
        dtype=config.get("weights_dtype", "fp32"),
    wildcard_constraints:
        # not nullbase: its null runs start from the MLP-randomized model, not the model of the bases
        stage="pass1|pass2|isolated|lambda|targeted|randomflip",
    log:
        "logs/subspace/{model}/{stage}/{run}.log",
    benchmark:
        "logs/subspace/{model}/{stage}/{run}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/subspace_sweep.py"


rule subspace_summary:
    input:
        tables=subspace_tables,
    output:
        per_layer="results/subspace/{model}/per_layer.parquet",
        summary="results/subspace/{model}/summary.parquet",
        conclusion=report(
            "results/subspace/{model}/conclusion.md",
            caption="../report/subspace_conclusion.rst",
            category="Subspace sweep",
        ),
    params:
        rank=SUBSPACE.get("figure_rank", max(SUBSPACE.get("ranks", [8, 32]))),
    log:
        "logs/subspace/{model}/summary.log",
    benchmark:
        "logs/subspace/{model}/summary.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/subspace_summary.py"


rule subspace_scatter:
    input:
        summary="results/subspace/{model}/summary.parquet",
        style="resources/matplotlibrc",
    output:
        png=report(
            "results/figures/subspace/{model}.scatter.png",
            caption="../report/subspace_scatter.rst",
            category="Subspace sweep",
        ),
        pdf="results/figures/subspace/{model}.scatter.pdf",
    params:
        rank=SUBSPACE.get("figure_rank", max(SUBSPACE.get("ranks", [8, 32]))),
        seed=config["seed"],
    log:
        "logs/figures/subspace/{model}.scatter.log",
    benchmark:
        "logs/figures/subspace/{model}.scatter.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/subspace_scatter.py"
