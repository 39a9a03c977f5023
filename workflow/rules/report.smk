# The HTML report: every metrics file beside the published table. If the workflow fails (a variant
# failed for good, after its retries), the report is still written, with the failed evaluations shown as
# failed and the reason (itersg.workflow.failures).


localrules:
    report,


REPORT_OPTIONS = " ".join(
    [
        "--curves",
        *(f"{variant}={paths.curves_dir(P, variant)}" for variant in P["study"]["variants"]),
        f"--benchmarks benchmarks/{MODE}",
        str(ITERSG_ARGS),
    ]
)


rule report:
    input:
        metrics=paths.all_metrics(P),
        summary=paths.prepare_summary(P),
        # the gallery: the evaluated images' rows of each predictions file, their ground truth and pixels
        predictions=paths.all_predictions(P),
        **paths.gallery_inputs(P),
    output:
        html=paths.report_file(P),
    params:
        settings=settings_of("report"),
        options=REPORT_OPTIONS,
    log:
        log_path("report"),
    conda:
        "../envs/itersg.yaml"
    shell:
        "itersg report --metrics {input.metrics} --prepare {input.summary} {params.options}"
        " --out {output.html} > {log} 2>&1"


onerror:
    from itersg.workflow.failures import write_failure_metrics

    failed = write_failure_metrics(P, workflow.dag)
    if failed:
        done = [path for path in paths.all_metrics(P) if os.path.exists(path)]
        summary = paths.prepare_summary(P)
        prepare = f"--prepare {summary}" if os.path.exists(summary) else ""
        os.makedirs(os.path.dirname(log_path("report")), exist_ok=True)
        shell(
            f"itersg report --metrics {' '.join(map(str, done + failed))} {prepare} {REPORT_OPTIONS}"
            f" --out {paths.report_file(P)} > {log_path('report')} 2>&1"
            f" && echo 'itersg: {len(failed)} evaluation(s) failed; the report shows them: {paths.report_file(P)}'"
        )
