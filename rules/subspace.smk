# Stage: subspace sweep (seed 001). Which residual-stream subspaces each patch's weight and
# activation deltas live in, against random subspaces of the same rank: candidate bases once per
# model from its weights, one sweep per patch, then per model the summary, conclusion and scatter.
# The stage's settings, runs and targets are built in common.smk.


rule subspace_bases:
    input:
        model="results/models/{model}.gguf",
    output:
        bases="results/subspace/{model}/bases.pt",
    params:
        ranks=SUBSPACE["ranks"],
        broad_rank=SUBSPACE["broad_rank"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["weights_dtype"],
    threads: 1
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
        model=lambda wc: run_of(wc).start,
        patch="results/search/{model}/{stage}/{run}/patch.json",
        bases="results/subspace/{model}/bases.pt",
        probes=lambda wc: run_of(wc).probes,
        controls=lambda wc: f"results/probes/{wc.model}/{SUBSPACE['control_set']}.json",
    output:
        table="results/subspace/{model}/{stage}/{run}.per_layer.parquet",
    params:
        ranks=SUBSPACE["ranks"],
        n_random=SUBSPACE["n_random"],
        batch_size=SUBSPACE["batch_size"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["weights_dtype"],
    wildcard_constraints:
        # not nullbase: its null runs start from the MLP-randomized model, not the model of the bases
        stage="pass1|pass2|isolated|lambda|targeted|randomflip",
    threads: 1
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
        rank=SUBSPACE_FIGURE_RANK,
    threads: 1
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
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/subspace/{model}.scatter.png",
            caption="../report/subspace_scatter.rst",
            category="Subspace sweep",
        ),
        pdf="results/figures/subspace/{model}.scatter.pdf",
    params:
        rank=SUBSPACE_FIGURE_RANK,
        seed=config["seed"],
    threads: 1
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
