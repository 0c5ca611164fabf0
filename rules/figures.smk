# Stage: figures. One seeded script per figure, fixed matplotlib style, vector + PNG.


rule plot_probe_gaps:
    input:
        table="results/scores/{model}/{probeset}.parquet",
        style="resources/matplotlibrc",
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
        style="resources/matplotlibrc",
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
