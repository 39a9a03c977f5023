# The HTML report: every metrics file beside the published table.


localrules:
    report,


rule report:
    input:
        metrics=paths.all_metrics(P),
        summary=paths.prepare_summary(P),
    output:
        html=paths.REPORT,
    params:
        itersg_args=ITERSG_ARGS,
        curves=[
            f"{variant}={paths.curves_dir(P, variant)}" for variant in P["study"]["variants"]
        ],
        benchmarks=f"benchmarks/{MODE}",
    log:
        log_path("report"),
    conda:
        "../envs/itersg.yaml"
    shell:
        "itersg report --metrics {input.metrics} --prepare {input.summary} --curves {params.curves}"
        " --benchmarks {params.benchmarks} {params.itersg_args} --out {output.html} > {log} 2>&1"
