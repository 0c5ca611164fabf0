# Stage: figures. One seeded script per figure, fixed matplotlib style (resources/matplotlibrc),
# PNG for the report and the paper, PDF for print; every PNG is a report item with a caption.


rule plot_probe_gaps:
    input:
        table="results/scores/{model}/{probeset}.parquet",
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/gaps/{model}/{probeset}.png",
            caption="../report/probe_gaps.rst",
            category="Probes",
        ),
        pdf="results/figures/gaps/{model}/{probeset}.pdf",
    log:
        "logs/figures/gaps/{model}/{probeset}.log",
    benchmark:
        "logs/figures/gaps/{model}/{probeset}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/plot_probe_gaps.py"


rule plot_training_loss:
    input:
        history="results/training/{model}.loss.parquet",
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/training/{model}.loss.png",
            caption="../report/training_loss.rst",
            category="Model quality",
        ),
        pdf="results/figures/training/{model}.loss.pdf",
    log:
        "logs/figures/training/{model}.log",
    benchmark:
        "logs/figures/training/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/plot_training_loss.py"


# ---------------------------------------------------------------------------- search and audit figures
# One per searched model: results/figures/<name>/{model}.png (+ .pdf), captions in report/<name>.rst.
rule fig_acceptance:
    input:
        iterations=lambda wc: search_run_files(wc.model, "iterations.parquet", ["pass1"]),
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/acceptance/{model}.png",
            caption="../report/acceptance.rst",
            category="Search",
        ),
        pdf="results/figures/acceptance/{model}.pdf",
    params:
        runs=lambda wc: search_run_ids(wc.model, ["pass1"]),  # [stage, run] of each input file
        window=config["audits"]["window"],
        seed=FIGURE_SEED,
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
    log:
        "logs/figures/acceptance/{model}.log",
    benchmark:
        "logs/figures/acceptance/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/fig_acceptance.py"


rule fig_fitness:
    input:
        iterations=lambda wc: search_run_files(wc.model, "iterations.parquet", ["pass1", "pass2"]),
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/fitness/{model}.png",
            caption="../report/fitness.rst",
            category="Search",
        ),
        pdf="results/figures/fitness/{model}.pdf",
    params:
        runs=lambda wc: search_run_ids(wc.model, ["pass1", "pass2"]),  # [stage, run] of each input file
        seed=FIGURE_SEED,
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
    log:
        "logs/figures/fitness/{model}.log",
    benchmark:
        "logs/figures/fitness/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/fig_fitness.py"


rule fig_crossing:
    input:
        summary="results/audits/{model}/boundary_crossing.summary.parquet",
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/crossing/{model}.png",
            caption="../report/crossing.rst",
            category="Audits",
        ),
        pdf="results/figures/crossing/{model}.pdf",
    params:
        seed=FIGURE_SEED,
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
    log:
        "logs/figures/crossing/{model}.log",
    benchmark:
        "logs/figures/crossing/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/fig_crossing.py"


rule fig_deltas:
    input:
        flips="results/audits/{model}/boundary_crossing.flips.parquet",
        summary="results/audits/{model}/boundary_crossing.summary.parquet",
        summaries=lambda wc: search_run_files(wc.model, "summary.json", ["pass1", "pass2"]),
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/deltas/{model}.png",
            caption="../report/deltas.rst",
            category="Audits",
        ),
        pdf="results/figures/deltas/{model}.pdf",
    params:
        seed=FIGURE_SEED,
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
    log:
        "logs/figures/deltas/{model}.log",
    benchmark:
        "logs/figures/deltas/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/fig_deltas.py"


rule fig_trajectories:
    input:
        iterations=lambda wc: search_run_files(wc.model, "iterations.parquet", ["pass1", "targeted"]),
        summaries=lambda wc: search_run_files(wc.model, "summary.json", ["pass1", "targeted"]),
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/trajectories/{model}.png",
            caption="../report/trajectories.rst",
            category="Audits",
        ),
        pdf="results/figures/trajectories/{model}.pdf",
    params:
        runs=lambda wc: search_run_ids(wc.model, ["pass1", "targeted"]),  # [stage, run] of each input file
        n_nearest=NEAREST_WRONG,
        seed=FIGURE_SEED,
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
    log:
        "logs/figures/trajectories/{model}.log",
    benchmark:
        "logs/figures/trajectories/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/fig_trajectories.py"


rule fig_layers:
    input:
        table="results/audits/{model}/layer_projection.parquet",
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/layers/{model}.png",
            caption="../report/layers.rst",
            category="Audits",
        ),
        pdf="results/figures/layers/{model}.pdf",
    params:
        seed=FIGURE_SEED,
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
    log:
        "logs/figures/layers/{model}.log",
    benchmark:
        "logs/figures/layers/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/fig_layers.py"


rule fig_interference:
    input:
        matrix="results/audits/{model}/interference_matrix.parquet",
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/interference/{model}.png",
            caption="../report/interference.rst",
            category="Audits",
        ),
        pdf="results/figures/interference/{model}.pdf",
    params:
        seed=FIGURE_SEED,
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
    log:
        "logs/figures/interference/{model}.log",
    benchmark:
        "logs/figures/interference/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/fig_interference.py"


rule fig_heldout:
    input:
        crosstabs=lambda wc: [kinds["crosstab"] for kinds in evaluation_outputs(wc.model)[0].values()],
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/heldout/{model}.png",
            caption="../report/heldout.rst",
            category="Evaluation",
        ),
        pdf="results/figures/heldout/{model}.pdf",
    params:
        seed=FIGURE_SEED,
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
    log:
        "logs/figures/heldout/{model}.log",
    benchmark:
        "logs/figures/heldout/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/fig_heldout.py"


rule fig_null_baseline:
    input:
        table="results/audits/{model}/null_baseline.parquet",
        verdict="results/audits/{model}/null_baseline.verdict.parquet",
        style=MATPLOTLIBRC,
    output:
        png=report(
            "results/figures/null_baseline/{model}.png",
            caption="../report/null_baseline.rst",
            category="Audits",
        ),
        pdf="results/figures/null_baseline/{model}.pdf",
    params:
        seed=FIGURE_SEED,
    wildcard_constraints:
        model=wildcard_choice(SEARCH_MODELS),
    log:
        "logs/figures/null_baseline/{model}.log",
    benchmark:
        "logs/figures/null_baseline/{model}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/fig_null_baseline.py"
