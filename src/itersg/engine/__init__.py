"""The training engine: iteration-based loop, checkpoints, resume, distributed setup and logging.

``runner.run_training`` is the entry point of ``itersg train`` and ``itersg pretrain-detr``; the
other modules are the small pieces it assembles (one idea per file).

May import: itersg.errors, itersg.files, itersg.config, itersg.precision, itersg.data, itersg.models,
itersg.evaluation.
"""
