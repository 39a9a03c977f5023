# The IterativeSG initial weights of r101-detr: the released VG-pretrained DETR, or DETR pretrained here
# on VG objects followed by decoder replication (detr_weights.source). EGTR's: its released VG-pretrained
# Deformable DETR, or the Deformable DETR pretrained here.

if P["detr_weights"]["source"] == "released":

    localrules:
        fetch_detr,
        fetch_egtr_detr,

    rule fetch_detr:
        output:
            weights=paths.released_detr(P),
        log:
            log_path("fetch_detr"),
        benchmark:
            benchmark_path("fetch_detr")
        conda:
            "../envs/itersg.yaml"
        shell:
            "itersg fetch iterativesg-detr-vg --dest resources > {log} 2>&1"

    rule fetch_egtr_detr:
        output:
            weights=paths.released_deformable_detr(P),
        log:
            log_path("fetch_egtr_detr"),
        benchmark:
            benchmark_path("fetch_egtr_detr")
        conda:
            "../envs/itersg.yaml"
        shell:
            "itersg fetch egtr-detr-vg --dest resources > {log} 2>&1"

else:

    rule pretrain_detr:
        input:
            summary=paths.prepare_summary(P),
        output:
            weights=f"{paths.detr_pretrain_dir(P)}/model_final.pth",
        params:
            settings=settings_of("pretrain_detr"),
            launch=LAUNCH,
            itersg_args=ITERSG_ARGS,
            out=lambda wildcards, output: os.path.dirname(output.weights),
        # first: the r101-detr training waits for it (the longest path through the DAG)
        priority: 10
        log:
            log_path("pretrain_detr"),
        benchmark:
            benchmark_path("pretrain_detr")
        threads: JOB_THREADS
        resources:
            **TRAINING_RESOURCES,
            runtime=runtime_of("pretrain_detr"),
        conda:
            "../envs/itersg.yaml"
        shell:
            "{params.launch} itersg pretrain-detr --out {params.out} {params.itersg_args} > {log} 2>&1"

    rule pretrain_deformable_detr:
        input:
            summary=paths.prepare_summary(P),
        output:
            weights=f"{paths.deformable_detr_pretrain_dir(P)}/model_final.pth",
        params:
            settings=settings_of("pretrain_deformable_detr"),
            launch=LAUNCH,
            itersg_args=ITERSG_ARGS,
            out=lambda wildcards, output: os.path.dirname(output.weights),
        priority: 10
        log:
            log_path("pretrain_deformable_detr"),
        benchmark:
            benchmark_path("pretrain_deformable_detr")
        threads: JOB_THREADS
        resources:
            **TRAINING_RESOURCES,
            runtime=lambda wildcards, attempt: slurm.training_runtime(for_pretraining(P, "egtr-r50"), "pretrain_detr",
                                                                      attempt),
        conda:
            "../envs/itersg.yaml"
        shell:
            "{params.launch} itersg pretrain-detr --variant egtr-r50 --out {params.out} {params.itersg_args}"
            " > {log} 2>&1"

    rule replicate_decoder:
        input:
            detr=f"{paths.detr_pretrain_dir(P)}/model_final.pth",
        output:
            weights=paths.replicated_init(P),
        params:
            settings=settings_of("replicate_decoder"),
            itersg_args=ITERSG_ARGS,
        priority: 10
        log:
            log_path("replicate_decoder"),
        benchmark:
            benchmark_path("replicate_decoder")
        conda:
            "../envs/itersg.yaml"
        shell:
            "itersg replicate-decoder --detr {input.detr} --out {output.weights} {params.itersg_args} > {log} 2>&1"
