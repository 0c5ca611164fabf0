# Stage 2: probes. Calibration runs once per (model, probe set) on the base model: the model's
# own top wrong token replaces the heuristic one (PAPER.md §3); the token report lists the probes
# whose gap compares a shared or a whitespace token rather than the answers.


rule calibrate_probes:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        model="results/models/{model}.gguf",
        probes=probe_set_path,
    output:
        probes="results/probes/{model}/{probeset}.json",
        tokens="results/probes/{model}/{probeset}.tokens.parquet",
    params:
        batch_size=config["score"]["batch_size"],
        upstream_controls=config["score"]["upstream_controls"],
        first_token=config["score"]["first_token"],
        device=config["device"],
        dtype=config["weights_dtype"],
    threads: 1
    log:
        "logs/probes/{model}/{probeset}.log",
    benchmark:
        "logs/probes/{model}/{probeset}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/calibrate_probes.py"
