# Probe scoring: one table per (model, probe set), gap = logit(correct) - logit(wrong), on the
# calibrated probes.


rule score_probes:
    input:
        model="results/models/{model}.gguf",
        probes="results/probes/{model}/{probeset}.json",
    output:
        table="results/scores/{model}/{probeset}.parquet",
    params:
        batch_size=config["score"]["batch_size"],
        device=config["device"],
        dtype=config["weights_dtype"],
    threads: 1
    log:
        "logs/scores/{model}/{probeset}.log",
    benchmark:
        "logs/scores/{model}/{probeset}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/score_probes.py"
