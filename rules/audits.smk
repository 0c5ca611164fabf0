# Stage 6: audits (PAPER.md §6-§7). From the search records alone, except the stage scores
# (interference matrix, rank-2 drift), which score every probe set on the pipeline's models.


rule audit_search:
    input:
        runs=audit_inputs,
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
        runs=lambda wc: audit_runs(wc.model),
        checkpoints=config.get("audits", {}).get("checkpoints", [50, 200, 500, 1000]),
        window=config.get("audits", {}).get("window", 200),
        threshold_pp=config.get("audits", {}).get("null_threshold_pp", 10),
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
        dtype=config.get("weights_dtype", "fp32"),
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
        patches=list(config.get("published_patches", {}).values()),
    output:
        crossing_flips="results/audits/published/boundary_crossing.flips.parquet",
        crossing_summary="results/audits/published/boundary_crossing.summary.parquet",
        scale_share="results/audits/published/scale_share.parquet",
        acceptance="results/audits/published/acceptance.parquet",
    params:
        names=list(config.get("published_patches", {})),
        checkpoints=config.get("audits", {}).get("checkpoints", [50, 200, 500, 1000]),
        window=config.get("audits", {}).get("window", 200),
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
