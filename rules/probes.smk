# Stage 2: probes. Calibration runs once per (model, probe set) on the base model: the model's
# own top wrong token replaces the heuristic one (PAPER.md §3).


rule calibrate_probes:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        model="results/models/{model}.gguf",
        probes=probe_set_path,
    output:
        probes="results/probes/{model}/{probeset}.json",
    params:
        batch_size=config["score"]["batch_size"],
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
