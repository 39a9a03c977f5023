# itersg: the study as a Snakemake workflow.
#   snakemake --cores 2                       run locally (params.yaml `mode` picks full or demo)
#   snakemake --config mode=demo --cores 2    the demo on the synthetic dataset
#   snakemake --profile slurm                 submit every job to SLURM (see docs/reproduce.md)
from snakemake.utils import min_version

min_version("8.20")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/detr.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        paths.report_file(P),


# A rule's jobs rerun when a module its command imports changes: the fingerprint of those files is a
# param of each rule (dvc.yaml lists the same files as the stages' deps; itersg.workflow.code_deps).
CODE = code_deps.ImportGraph.of_project(workflow.basedir)
for _rule in workflow.rules:
    if _rule.shellcmd and (_fingerprint := CODE.fingerprint(_rule.shellcmd)):
        _rule.set_params(code=_fingerprint)
