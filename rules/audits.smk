# Stage 6: audits (PAPER.md §6-§7). From the search records alone, except the stage scores
# (interference matrix, rank-2 drift), which score every probe set on the pipeline's models.

# The acceptance table's settings, alike for our searches and the published patches
ACCEPTANCE = {k: config["audits"][k] for k in ("checkpoints", "window")}


rule audit_search:
    input:
        patches=lambda wc: [r.file("patch.json") for r in runs_of(RUNS, wc.model)],
        summaries=lambda wc: [r.file("summary.json") for r in runs_of(RUNS, wc.model)],
        iterations=lambda wc: [r.file("iterations.parquet") for r in runs_of(RUNS, wc.model)],
        base_model="results/models/{model}.gguf",
    output:
        crossing_flips="results/audits/{model}/boundary_crossing.flips.parquet",
        crossing_summary="results/audits/{model}/boundary_crossing.summary.parquet",
        acceptance="results/audits/{model}/acceptance.parquet",
        lambda_sweep="results/audits/{model}/lambda_sweep.parquet",
        quartiles="results/audits/{model}/interference_quartiles.parquet",
        scale_share="results/audits/{model}/scale_share.parquet",
        layer_projection="results/audits/{model}/layer_projection.parquet",
        overlap="results/audits/{model}/group_overlap.parquet",
        null_table="results/audits/{model}/null_baseline.parquet",
        null_verdict="results/audits/{model}/null_baseline.verdict.parquet",
        fitness_modes="results/audits/{model}/fitness_modes.parquet",
        random_flip="results/audits/{model}/random_flip_null.parquet",
    params:
        **ACCEPTANCE,
        # the records of the runs, in the order of the input lists
        runs=lambda wc: [r.as_dict() for r in runs_of(RUNS, wc.model)],
        threshold_pp=config["audits"]["null_threshold_pp"],
    threads: 1
    log:
        "logs/audits/{model}/search.log",
    benchmark:
        "logs/audits/{model}/search.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/audit_search.py"


rule score_stage_models:
    input:
        models=lambda wc: stage_models(wc.model)[1],
        probes=lambda wc: expand(
            "results/probes/{model}/{probeset}.json", model=wc.model, probeset=SEARCH["audit_probe_sets"]
        ),
    output:
        scores="results/audits/{model}/stage_scores.parquet",
        matrix="results/audits/{model}/interference_matrix.parquet",
        drift="results/audits/{model}/rank2_drift.parquet",
    params:
        stage_labels=lambda wc: stage_models(wc.model)[0],
        device=config["device"],
        dtype=config["weights_dtype"],
    threads: 1
    log:
        "logs/audits/{model}/stage_scores.log",
    benchmark:
        "logs/audits/{model}/stage_scores.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/score_stage_models.py"


rule audit_published:
    input:
        patches=[config_path(p) for p in config["published_patches"].values()],
    output:
        crossing_flips="results/audits/published/boundary_crossing.flips.parquet",
        crossing_summary="results/audits/published/boundary_crossing.summary.parquet",
        scale_share="results/audits/published/scale_share.parquet",
        acceptance="results/audits/published/acceptance.parquet",
    params:
        **ACCEPTANCE,
        names=list(config["published_patches"]),
    threads: 1
    log:
        "logs/audits/published.log",
    benchmark:
        "logs/audits/published.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/audit_published.py"
