"""The predictions file: what a model predicted on a split, the input of the metrics.

One HDF5 file per evaluated checkpoint. Per-image arrays are concatenated into flat datasets (as in
``VG-SGG-with-attri.h5``); ``object_offsets`` / ``relation_offsets`` say which rows belong to which image.
Boxes are in ORIGINAL image pixels. Format version 1 (see also docs/predictions-format.md):

Root attributes
    ``format`` = ``"itersg-predictions"``, ``format_version`` = 1, ``variant`` (str), ``iteration`` (int),
    ``split`` (str), ``num_object_classes`` (int, 150 for VG150), ``num_predicates`` (int, C = 50 for VG150).

Datasets (I images, sum M objects, sum P relation rows)
    ==================  =======  ==================  ============================================
    image_ids           int64    [I]                 unique image ids, in writing order
    object_offsets      int64    [I + 1]             objects of image i: rows [o[i], o[i+1])
    relation_offsets    int64    [I + 1]             relation rows of image i: rows [r[i], r[i+1])
    boxes               float32  [sum M, 4]          x1, y1, x2, y2, original-image pixels
    labels              int64    [sum M]             object class, 0 .. num_object_classes - 1
    scores              float32  [sum M]             object score
    rel_pairs           int64    [sum P, 2]          (subject, object) indices into the image's objects
    rel_scores          float32  [sum P, C + 1]      predicate probabilities; LAST column = no relation
    triplet_scores      float32  [sum P]             ranking score; rows are ranked best-first
    ==================  =======  ==================  ============================================

``rel_pairs`` are local to the image (0 .. M_i - 1). The relation rows of an image keep the model's
ranking, which the metrics use as is. Every float must be finite.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from itersg.errors import UserError
from itersg.files import atomic_output, check_free_space

FORMAT_NAME = "itersg-predictions"
FORMAT_VERSION = 1
OBJECT_FIELDS = ("boxes", "labels", "scores")
RELATION_FIELDS = ("rel_pairs", "rel_scores", "triplet_scores")
FIELD_DTYPES = {"boxes": np.float32, "labels": np.int64, "scores": np.float32,
                "rel_pairs": np.int64, "rel_scores": np.float32, "triplet_scores": np.float32}
FLOAT_FIELDS = ("boxes", "scores", "rel_scores", "triplet_scores")
HDF5_MARGIN = 256 * 1024  # bytes beyond the raw rows: chunk indexes, metadata, the image index
REGENERATE = "re-run `itersg evaluate` for this checkpoint to write a new file"


def field_width(name: str, num_predicates: int) -> tuple[int, ...]:
    """The per-row shape of a field: (4,) for boxes, (C + 1,) for rel_scores, () for scalars."""
    return {"boxes": (4,), "rel_pairs": (2,), "rel_scores": (num_predicates + 1,)}.get(name, ())


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, possibly on the GPU
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def check_prediction(record: Mapping, num_predicates: int, num_object_classes: int,
                     source: str = "predictions") -> dict[str, np.ndarray | int]:
    """Validate one per-image prediction dict and return it as NumPy arrays of the format's dtypes.

    ``record`` holds ``image_id`` and the fields of :data:`FIELD_DTYPES` (tensors or arrays).
    Raises UserError naming ``source``, the field and the image id.
    """
    if "image_id" not in record:
        raise UserError(f"{source}: a prediction has no 'image_id'; every record needs one")
    image_id = int(record["image_id"])
    where = f"{source}: image {image_id}"
    out: dict[str, np.ndarray | int] = {"image_id": image_id}
    for name, dtype in FIELD_DTYPES.items():
        if name not in record:
            raise UserError(f"{where}: field '{name}' is missing; {REGENERATE}")
        array = _to_numpy(record[name])
        wanted_kind = "f" if name in FLOAT_FIELDS else "iu"
        if array.dtype.kind not in wanted_kind:
            raise UserError(f"{where}: field '{name}' has dtype {array.dtype}, expected "
                            f"{np.dtype(dtype).name}; {REGENERATE}")
        out[name] = array.astype(dtype, copy=False)
    num_objects, num_rows = len(out["boxes"]), len(out["rel_pairs"])
    for name in FIELD_DTYPES:
        rows = num_objects if name in OBJECT_FIELDS else num_rows
        expected = (rows, *field_width(name, num_predicates))
        if out[name].shape != expected:
            raise UserError(f"{where}: field '{name}' has shape {out[name].shape}, expected {expected}"
                            f" (num_predicates = {num_predicates}); {REGENERATE}")
    _check_values(out, num_object_classes, where)
    return out


def _check_values(arrays: Mapping[str, np.ndarray], num_object_classes: int, where: str,
                  image_of_row: Mapping[str, np.ndarray] | None = None) -> None:
    """Finite floats, labels in range, pair indices inside the image's objects (one image or a block).

    ``image_of_row`` (for a block of images) maps "object" / "relation" to the image id of each row and
    ``arrays["num_objects_of_row"]`` gives M_i per relation row.
    """
    def fail(name: str, row: int, what: str) -> None:
        kind = "object" if name in OBJECT_FIELDS else "relation"
        image = f" of image {int(image_of_row[kind][row])}" if image_of_row is not None else ""
        raise UserError(f"{where}: field '{name}'{image} {what}; {REGENERATE}")

    for name in FLOAT_FIELDS:
        bad = ~np.isfinite(arrays[name])
        if bad.any():
            fail(name, int(np.argwhere(bad)[0][0]), "contains NaN or infinite values")
    bad = (arrays["labels"] < 0) | (arrays["labels"] >= num_object_classes)
    if bad.any():
        fail("labels", int(np.flatnonzero(bad)[0]), f"has labels outside 0..{num_object_classes - 1}")
    limit = arrays.get("num_objects_of_row", len(arrays["boxes"]))
    limit = np.reshape(limit, (-1, 1))
    bad = ((arrays["rel_pairs"] < 0) | (arrays["rel_pairs"] >= limit)).any(1)
    if bad.any():
        fail("rel_pairs", int(np.flatnonzero(bad)[0]), "has object indices outside the image's objects")


class PredictionsWriter:
    """Append per-image predictions to a new predictions file; the file appears only when complete.

    Usage::

        with PredictionsWriter(path, variant="r101-detr", iteration=5000, split="test") as writer:
            for prediction in predictions:      # dicts with the contract's fields
                writer.add(prediction)

    Rows go to a temporary file in the same directory, renamed over ``path`` on a clean exit and deleted
    if the block raises. ``buffer_images`` images are kept in memory between appends.

    Before each block of rows is written, the free space is checked against its uncompressed size and,
    when ``expected_images`` is given, against the size of the whole file extrapolated from what was
    written so far: a disk that cannot hold the file stops the evaluation early with a ``WriteError``
    that says how much space is needed. A write that fails anyway (another process filled the disk)
    is the same ``WriteError``: HDF5 writes through a quiet ``GuardedFile``, which records the failure
    and discards the rest without failing HDF5 (whose error paths can crash the process); the writer
    checks for it after every step, closes the HDF5 file and deletes the temporary file at once.
    """

    def __init__(self, path: str | os.PathLike, *, variant: str, iteration: int, split: str,
                 num_object_classes: int = 150, num_predicates: int = 50, buffer_images: int = 64,
                 expected_images: int | None = None):
        self.path = Path(path)
        self.num_object_classes = int(num_object_classes)
        self.num_predicates = int(num_predicates)
        self.buffer_images = buffer_images
        self.expected_images = expected_images
        self._image_ids: list[int] = []
        self._seen: set[int] = set()
        self._counts: list[tuple[int, int]] = []
        self._buffer: list[dict] = []
        self._written_images = 0
        self._file: h5py.File | None = None
        self._output = atomic_output(self.path, prefix=f".{self.path.name}.", quiet=True)
        self._handle = self._output.__enter__()
        with self._writing():
            self._file = h5py.File(self._handle, "w")
            self._create_layout(variant, iteration, split)
            self._file.flush()
        self._empty_size = self._file_size()

    def _create_layout(self, variant: str, iteration: int, split: str) -> None:
        self._file.attrs.update({
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "variant": variant,
            "iteration": int(iteration), "split": split, "num_object_classes": self.num_object_classes,
            "num_predicates": self.num_predicates,
        })
        for name, dtype in FIELD_DTYPES.items():
            width = field_width(name, self.num_predicates)
            chunk_rows = max(1, 65536 // int(np.prod(width, dtype=np.int64)))
            # LZF (built into h5py): under half the writing time of gzip level 1 for about 9 % more bytes.
            # Not for the predicate scores, over 90 % of the bytes: softmax floats shrink by only 5-8 % under
            # shuffle + LZF, which costs 0.4 ms of CPU per image to write and read (`itersg bench evaluate`).
            # Readers decode any filter, so older (gzip, LZF) files still read.
            compression = {} if name == "rel_scores" else {"compression": "lzf", "shuffle": True}
            self._file.create_dataset(name, shape=(0, *width), maxshape=(None, *width), dtype=dtype,
                                      chunks=(chunk_rows, *width), **compression)

    def add(self, prediction: Mapping) -> None:
        """Append one image's prediction (``image_id`` + the fields of FIELD_DTYPES)."""
        record = check_prediction(prediction, self.num_predicates, self.num_object_classes,
                                  source=f"predictions for {self.path}")
        image_id = int(record["image_id"])
        if image_id in self._seen:
            raise UserError(f"predictions for {self.path}: image {image_id} was added twice")
        self._seen.add(image_id)
        self._image_ids.append(image_id)
        self._counts.append((len(record["boxes"]), len(record["rel_pairs"])))
        self._buffer.append(record)
        if len(self._buffer) >= self.buffer_images:
            with self._writing():
                self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        blocks = {name: np.concatenate([record[name] for record in self._buffer]) for name in FIELD_DTYPES}
        check_free_space(self.path, self._space_needed(sum(block.nbytes for block in blocks.values())))
        for name, rows in blocks.items():
            dataset = self._file[name]
            start = dataset.shape[0]
            dataset.resize(start + len(rows), axis=0)
            dataset[start:] = rows
        self._written_images += len(self._buffer)
        self._buffer = []

    def _space_needed(self, block_bytes: int) -> int:
        """Bytes the disk must still hold: this block (uncompressed) and, if known, the rest of the file."""
        needed = block_bytes + HDF5_MARGIN
        if self.expected_images and self._written_images:
            per_image = max(self._file_size() - self._empty_size, 0) / self._written_images
            needed = max(needed, int(per_image * (self.expected_images - self._written_images)) + HDF5_MARGIN)
        return needed

    def _file_size(self) -> int:
        return os.fstat(self._handle.fileno()).st_size

    def close(self) -> None:
        """Write the index, close and move the file into place."""
        with self._writing():
            self._flush()
            counts = np.array(self._counts, dtype=np.int64).reshape(-1, 2)
            self._file.create_dataset("image_ids", data=np.array(self._image_ids, dtype=np.int64))
            for column, name in enumerate(("object_offsets", "relation_offsets")):
                offsets = np.concatenate([[0], np.cumsum(counts[:, column])]).astype(np.int64)
                self._file.create_dataset(name, data=offsets)
            self._file.flush()  # a full disk fails here, as an exception, rather than inside close()
            self._file.close()
        self._output.__exit__(None, None, None)  # rename into place

    def abort(self, exc: BaseException | None = None) -> None:
        """Close and delete the temporary file; ``path`` is left untouched.

        Raises ``WriteError`` instead of returning when ``exc`` came from a failed write.
        """
        self._handle.discard()  # HDF5 may flush its caches on close: let that succeed, on nothing
        if self._file is not None and self._file.id.valid:
            with contextlib.suppress(Exception):
                self._file.close()
        exc = exc or RuntimeError("predictions abandoned")
        self._output.__exit__(type(exc), exc, exc.__traceback__)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Any failure inside deletes the temporary file; a failed write becomes one WriteError."""
        try:
            yield
            if self._handle.error is not None:  # HDF5 was not told (see GuardedFile): stop here
                raise self._handle.error
        except BaseException as exc:
            self.abort(exc)
            raise

    def __enter__(self) -> PredictionsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif not self._handle.closed:
            self.abort(exc)


class PredictionsReader:
    """Read and validate a predictions file.

    Opening checks the attributes, the presence, dtypes and shapes of all datasets and the offsets;
    iterating checks the values (finite, labels and pair indices in range) block by block. Every
    problem is a UserError naming the file, the field and, where it applies, the image id.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"predictions file {self.path} does not exist; run `itersg evaluate` first")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise UserError(f"{self.path} is not a readable HDF5 predictions file ({err}); "
                            f"{REGENERATE}") from None
        try:
            self._check_layout()
        except UserError:
            self._file.close()
            raise

    def _fail(self, what: str) -> None:
        raise UserError(f"{self.path}: {what}; {REGENERATE}")

    def _check_layout(self) -> None:
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT_NAME:
            self._fail(f"is not an itersg predictions file (attribute 'format' is {attrs.get('format')!r}, "
                       f"expected {FORMAT_NAME!r})")
        if attrs.get("format_version") != FORMAT_VERSION:
            self._fail(f"format_version {attrs.get('format_version')} is not supported "
                       f"(this itersg reads version {FORMAT_VERSION})")
        for key in ("variant", "iteration", "split", "num_object_classes", "num_predicates"):
            if key not in attrs:
                self._fail(f"attribute '{key}' is missing")
        self.variant = str(attrs["variant"])
        self.iteration = int(attrs["iteration"])
        self.split = str(attrs["split"])
        self.num_object_classes = int(attrs["num_object_classes"])
        self.num_predicates = int(attrs["num_predicates"])
        index = {"image_ids": np.int64, "object_offsets": np.int64, "relation_offsets": np.int64}
        for name, dtype in {**index, **FIELD_DTYPES}.items():
            if name not in self._file:
                self._fail(f"field '{name}' is missing")
            if self._file[name].dtype != dtype:
                self._fail(f"field '{name}' has dtype {self._file[name].dtype}, expected "
                           f"{np.dtype(dtype).name}")
        self.image_ids = self._file["image_ids"][:]
        self.object_offsets = self._file["object_offsets"][:]
        self.relation_offsets = self._file["relation_offsets"][:]
        if self.image_ids.ndim != 1:
            self._fail(f"field 'image_ids' has shape {self.image_ids.shape}, expected (num_images,)")
        unique, counts = np.unique(self.image_ids, return_counts=True)
        if (counts > 1).any():
            self._fail(f"field 'image_ids' lists image {int(unique[counts > 1][0])} more than once")
        segments = (("object_offsets", OBJECT_FIELDS), ("relation_offsets", RELATION_FIELDS))
        for offsets_name, fields in segments:
            offsets = getattr(self, offsets_name)
            if (offsets.shape != (len(self.image_ids) + 1,) or offsets[0] != 0
                    or (np.diff(offsets) < 0).any()):
                self._fail(f"field '{offsets_name}' is not a valid index: need {len(self.image_ids) + 1} "
                           f"non-decreasing offsets starting at 0")
            for name in fields:
                expected = (int(offsets[-1]), *field_width(name, self.num_predicates))
                if self._file[name].shape != expected:
                    self._fail(f"field '{name}' has shape {self._file[name].shape}, expected {expected} "
                               f"(rows from '{offsets_name}', num_predicates = {self.num_predicates})")

    def __len__(self) -> int:
        return len(self.image_ids)

    def check_image_ids(self, valid_ids: Iterable[int], split: str) -> None:
        """UserError if the file holds an image id that is not in ``valid_ids`` (the split's images)."""
        unknown = np.setdiff1d(self.image_ids, np.fromiter(valid_ids, dtype=np.int64))
        if unknown.size:
            self._fail(f"field 'image_ids' holds image {int(unknown[0])} ({unknown.size} unknown in total)"
                       f" which is not in split '{split}'; evaluate with the split the file was made for"
                       f" (the file says '{self.split}')")

    def __iter__(self) -> Iterator[dict[str, np.ndarray | int]]:
        return self.iter_predictions()

    def iter_predictions(self, block_images: int = 512) -> Iterator[dict[str, np.ndarray | int]]:
        """Yield one validated prediction dict per image (fields of FIELD_DTYPES + ``image_id``)."""
        for start in range(0, len(self), block_images):
            yield from self._read_block(start, min(start + block_images, len(self)))

    def prediction(self, image_id: int) -> dict[str, np.ndarray | int]:
        """The validated prediction of one image, reading only its rows (KeyError if it has none)."""
        where = np.flatnonzero(self.image_ids == int(image_id))
        if where.size == 0:
            raise KeyError(image_id)
        return next(self._read_block(int(where[0]), int(where[0]) + 1))

    def _read_block(self, first: int, last: int) -> Iterator[dict[str, np.ndarray | int]]:
        o0, o1 = int(self.object_offsets[first]), int(self.object_offsets[last])
        r0, r1 = int(self.relation_offsets[first]), int(self.relation_offsets[last])
        arrays = {name: self._file[name][o0:o1] for name in OBJECT_FIELDS}
        arrays.update({name: self._file[name][r0:r1] for name in RELATION_FIELDS})
        ids = self.image_ids[first:last]
        num_objects = np.diff(self.object_offsets[first:last + 1])
        num_rows = np.diff(self.relation_offsets[first:last + 1])
        arrays["num_objects_of_row"] = np.repeat(num_objects, num_rows)
        _check_values(arrays, self.num_object_classes, str(self.path),
                      {"object": np.repeat(ids, num_objects), "relation": np.repeat(ids, num_rows)})
        for i, image_id in enumerate(ids):
            a0, a1 = self.object_offsets[first + i] - o0, self.object_offsets[first + i + 1] - o0
            b0, b1 = self.relation_offsets[first + i] - r0, self.relation_offsets[first + i + 1] - r0
            record: dict[str, np.ndarray | int] = {"image_id": int(image_id)}
            record.update({name: arrays[name][a0:a1] for name in OBJECT_FIELDS})
            record.update({name: arrays[name][b0:b1] for name in RELATION_FIELDS})
            yield record

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PredictionsReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
