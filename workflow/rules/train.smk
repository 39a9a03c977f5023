# Training, one job per variant. Resume checkpoints live in <train dir>/checkpoints, outside the declared
# outputs, so a failed, preempted or timed-out job resumes where it stopped when it is retried.


rule train:
    input:
        summary=paths.prepare_summary(P),
        init=init_weights,
    output:
        weights=paths.final_weights(P, "{variant}"),
    params:
        itersg_args=ITERSG_ARGS,
        out=lambda wildcards, output: os.path.dirname(output.weights),
        init=init_arg,
        launcher=train_launcher(P["train"]["gpus"], P["train"]["nodes"]),
        # Listed so that a change of this variant's settings reruns only this variant.
        settings=lambda wildcards: P["variants"][wildcards.variant],
    log:
        log_path("train", "{variant}"),
    benchmark:
        benchmark_path("train", "{variant}")
    threads: JOB_THREADS
    resources:
        gpu=P["train"]["gpus"],
        nodes=P["train"]["nodes"],
        tasks=max(1, P["train"]["gpus"]) * P["train"]["nodes"] if P["train"]["nodes"] > 1 else 1,
        runtime=train_runtime,
        # SLURM warns 2 minutes before the time limit: the job checkpoints and exits 75, a retry resumes.
        slurm_extra="'--signal=USR1@120'",
        mem_mb=lambda wildcards, attempt: 32000 * attempt if P["train"]["gpus"] else 4000 * attempt,
    conda:
        "../envs/itersg.yaml"
    shell:
        "{params.launcher} itersg train --variant {wildcards.variant} --out {params.out} {params.init}"
        " {params.itersg_args} > {log} 2>&1"
