# Stage: the paper. One page regenerated from the result files: every number, table and figure is
# read from a file and shown with the provenance record beside it. `paper_manifest()` says which
# files go where; it is built from the config, so parts the config leaves out (published patches,
# searches, the embedded models) and stages whose rules are not in this workflow (evaluation)
# simply drop out of the paper.


rule build_paper:
    input:
        results=paper_inputs,
        template=repo_path("resources/paper/paper.md.j2"),
        shell=repo_path("resources/paper/paper.html.j2"),
        css=repo_path("resources/paper/paper.css"),
        published=repo_path("resources/paper/published.yaml"),
        fidelity=repo_path("resources/paper/fidelity.yaml"),
    output:
        html=report("results/paper/index.html", caption="../report/paper.rst", category="Paper"),
        markdown="results/paper/paper.md",
    params:
        manifest=lambda wildcards: paper_manifest(),
    log:
        "logs/paper/build.log",
    benchmark:
        "logs/paper/build.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/build_paper.py"
