# Data: get the VG150 files (download in full mode, generate in demo mode), verify, prepare.

if MODE == "demo":

    rule synth:
        output:
            **paths.vg_files(P),
            images=directory(paths.image_dir(P)),
        params:
            settings=settings_of("synth"),
            root=lambda wildcards, output: os.path.dirname(output.h5),
            images=P["synth"]["images"],
            seed=P["synth"]["seed"],
            size=P["synth"]["image_size"],
        log:
            log_path("synth"),
        benchmark:
            benchmark_path("synth")
        conda:
            "../envs/itersg.yaml"
        shell:
            "itersg data synth --out {params.root} --images {params.images} --seed {params.seed}"
            " --image-size {params.size} > {log} 2>&1"

else:

    # Downloads run where the workflow runs: compute nodes often have no internet.
    localrules:
        fetch_vg,

    rule fetch_vg:
        output:
            **paths.vg_files(P),
            images=directory(paths.image_dir(P)),
        params:
            settings=settings_of("fetch_vg"),
            dest=lambda wildcards, output: os.path.dirname(os.path.dirname(output.h5)),
        log:
            log_path("fetch_vg"),
        benchmark:
            benchmark_path("fetch_vg")
        retries: 2
        conda:
            "../envs/itersg.yaml"
        shell:
            "itersg fetch vg --dest {params.dest} > {log} 2>&1"


rule verify:
    input:
        **paths.vg_files(P),
        images=paths.image_dir(P),
    output:
        flag=paths.verified_flag(P),
    params:
        settings=settings_of("verify"),
        root=lambda wildcards, input: os.path.dirname(input.h5),
    log:
        log_path("verify"),
    benchmark:
        benchmark_path("verify")
    conda:
        "../envs/itersg.yaml"
    shell:
        "itersg data verify --root {params.root} > {output.flag} 2> {log}"


rule prepare:
    input:
        flag=paths.verified_flag(P),
        h5=paths.vg_files(P)["h5"],
    output:
        summary=paths.prepare_summary(P),
    params:
        settings=settings_of("prepare"),
        root=lambda wildcards, input: os.path.dirname(input.h5),
        num_val=P["data"]["num_val_images"],
    log:
        log_path("prepare"),
    benchmark:
        benchmark_path("prepare")
    conda:
        "../envs/itersg.yaml"
    shell:
        "itersg data prepare --root {params.root} --num-val {params.num_val} --out {output.summary} > {log} 2>&1"
