"""VG150 files: reading, splits, Dataset and transforms, synthetic data, verification, fetching.

May import: itersg.errors, itersg.files, itersg.catalog.
"""
