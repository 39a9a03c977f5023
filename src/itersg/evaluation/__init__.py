"""Evaluation: the predictions file, the scene-graph metrics and the box AP.

* ``predictions``: the HDF5 predictions file (writer, validating reader); docs/predictions-format.md.
* ``sg_metrics``: R@K, ng-R@K, zR@K, mR@K (ISG and corrected), hR@K, vectorised per image.
* ``detection``: COCO box AP (AP, AP50, AP75, APs, APm, APl) with pycocotools.
* ``metrics``: predictions + ground truth -> the metrics JSON.
* ``bench``: synthetic data and the timing of the metrics against a loop oracle.
* ``runner``: ``itersg evaluate``: a checkpoint run on a split (the only module that builds a model).

May import: itersg.errors, itersg.files, itersg.precision, itersg.data, itersg.models.
"""
