"""The Snakemake/SLURM/DVC glue: output paths, SLURM requests, the generated dvc.yaml, the DAG read from
Snakemake, and the failure records of a run.

May import only the configuration (``itersg.config``), the variant catalogue (``itersg.catalog``), the
file helpers (``itersg.files``, ``itersg.errors``) and its own modules, never torch or the model code:
the Snakefile and ``snakemake -n`` load this package (tests/pipeline/test_workflow_static.py holds it).

* ``paths``: where every stage writes; ``slurm``: what the jobs ask SLURM for;
* ``dag``: the jobs of the workflow as Snakemake builds them; ``dvc_stages``: dvc.yaml from them;
* ``code_deps``: the source files each job's command runs, from the import graph;
* ``failures``: failed-status metrics files for the evaluations a failed run left missing.

May import: itersg.errors, itersg.files, itersg.config, itersg.catalog.
"""
