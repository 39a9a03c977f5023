# Evaluation of each variant at each listed checkpoint on the test split.


rule evaluate:
    input:
        weights=paths.final_weights(P, "{variant}"),
    output:
        metrics=paths.metrics_file(P, "{variant}", "{iteration}"),
        predictions=paths.predictions_file(P, "{variant}", "{iteration}"),
    params:
        settings=settings_of("evaluate"),
        variant_settings=variant_settings,
        itersg_args=ITERSG_ARGS,
        checkpoint=lambda wildcards: paths.checkpoint(P, wildcards.variant, wildcards.iteration),
        out=lambda wildcards, output: os.path.dirname(output.metrics),
        split=P["evaluate"]["split"],
    log:
        log_path("evaluate", "{variant}_{iteration}"),
    benchmark:
        benchmark_path("evaluate", "{variant}_{iteration}")
    threads: JOB_THREADS
    resources:
        gpu=1 if P["train"]["gpus"] else 0,
        gpu_model=slurm.gpu_model(),
        runtime=lambda wildcards, attempt: 120 * attempt,
        mem_mb=lambda wildcards, attempt: 16000 * attempt,
    conda:
        "../envs/itersg.yaml"
    shell:
        "itersg evaluate --variant {wildcards.variant} --checkpoint {params.checkpoint} --split {params.split}"
        " --out {params.out} {params.itersg_args} > {log} 2>&1"
