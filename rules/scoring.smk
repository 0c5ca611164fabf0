# Stage 2: probe scoring. One table per (model, probe set): gap = logit(correct) - logit(wrong).


rule score_probes:
    input:
        model="results/models/{model}.gguf",
        probes=probe_set_path,
    output:
        table="results/scores/{model}/{probeset}.parquet",
    params:
        batch_size=config["score"]["batch_size"],
        device=config["device"],
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
