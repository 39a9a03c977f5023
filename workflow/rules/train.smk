# Training, one job per variant. Resume checkpoints live in <train dir>/checkpoints, outside the declared
# outputs, so a failed, preempted or timed-out job resumes where it stopped when it is retried.


rule train:
    input:
        summary=paths.prepare_summary(P),
        init=init_weights,
    output:
        weights=paths.final_weights(P, "{variant}"),
    params:
        settings=settings_of("train"),
        launch=LAUNCH,
        itersg_args=ITERSG_ARGS,
        out=lambda wildcards, output: os.path.dirname(output.weights),
        init=init_arg,
        # Listed so that a change of this variant's settings reruns only this variant.
        variant_settings=variant_settings,
    log:
        log_path("train", "{variant}"),
    benchmark:
        benchmark_path("train", "{variant}")
    threads: JOB_THREADS
    # SLURM warns the ranks slurm.time_limit_warning_seconds before the time limit: they checkpoint and
    # exit 75, and the profile's retries resubmit the job, which resumes.
    resources:
        **TRAINING_RESOURCES,
        runtime=runtime_of("train"),
    conda:
        "../envs/itersg.yaml"
    shell:
        "{params.launch} itersg train --variant {wildcards.variant} --out {params.out} {params.init}"
        " {params.itersg_args} > {log} 2>&1"
