"""Training records: a JSON-lines log, dvclive curves and console lines (rank 0 only).

``OUT/log.jsonl`` holds one JSON object per line: ``{"event": "start", ...provenance}``, then
``{"event": "train", "iteration": k, "loss": .., "loss_<name>": .., "lr": .., ...}`` every
``train.log_every`` iterations, ``{"event": "val", ...}`` after each validation, ``{"event":
"checkpoint", ...}``, ``{"event": "preempted"|"finished", ...}``. ``OUT/dvclive/`` holds the same
curves as dvclive plots (``plots/metrics/<name>.tsv``, step = iteration). On resume both are cut
back to the checkpoint's iteration so a resumed run records each iteration once.

Every record is written all or nothing: if the disk fills up (or the folder turns read-only) in the
middle of one, the log and the curves are cut back to the previous record, the summary
``dvclive/metrics.json`` keeps its previous content (it is replaced atomically), and a ``WriteError``
names the file; after that the log writes nothing more, so the error that ends the run is that one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from itersg.files import WriteError, undo_on_failure, write_failure, write_text_atomic

LOG_NAME = "log.jsonl"
CURVES_DIR = "dvclive"


def _write_lines_atomically(path: Path, lines: list[str]) -> None:
    write_text_atomic(path, "".join(lines))


def truncate_json_log(path: Path, iteration: int) -> None:
    """Drop iteration records past ``iteration`` (and any torn last line) from a JSON-lines log."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("iteration", 0) <= iteration:
            kept.append(line if line.endswith("\n") else line + "\n")
    _write_lines_atomically(path, kept)


def truncate_tsv_curves(folder: Path, iteration: int) -> None:
    """Drop rows with ``step > iteration`` from every dvclive metric file under ``folder``."""
    for tsv in folder.rglob("*.tsv"):
        lines = tsv.read_text().splitlines(keepends=True)
        if not lines:
            continue
        header, rows = lines[0], lines[1:]
        step_column = header.rstrip("\n").split("\t").index("step") if "step" in header else None
        if step_column is None:
            continue
        kept = [r for r in rows if _step(r, step_column) is not None and _step(r, step_column) <= iteration]
        _write_lines_atomically(tsv, [header, *kept])


def _step(row: str, column: int) -> int | None:
    try:
        return int(row.rstrip("\n").split("\t")[column])
    except (IndexError, ValueError):
        return None


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class TrainingLog:
    """Writes the JSON-lines log, the dvclive curves and console lines; inert on ranks other than 0."""

    def __init__(self, out: str | Path, active: bool, resume_iteration: int | None,
                 use_dvclive: bool = True) -> None:
        self.active = active
        self.out = Path(out)
        self.path = self.out / LOG_NAME
        self._live = None
        self._start = time.monotonic()
        if not active:
            return
        try:
            self._open(resume_iteration, use_dvclive)
        except OSError as err:
            raise write_failure(err.filename or self.out, err) from None

    def _open(self, resume_iteration: int | None, use_dvclive: bool) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        resuming = resume_iteration is not None
        if resuming:
            truncate_json_log(self.path, resume_iteration)
            truncate_tsv_curves(self.out / CURVES_DIR, resume_iteration)
        elif self.path.exists():
            self.path.unlink()
        if use_dvclive:
            with undo_on_failure(self.out / CURVES_DIR):
                self._live = _open_live(self.out / CURVES_DIR, resume=resuming)

    def record(self, event: str, iteration: int, values: Mapping[str, Any] | None = None,
               curves: bool = False) -> None:
        """Append one record; with ``curves`` the numeric values also go to dvclive at ``iteration``."""
        if not self.active:
            return
        record = {"event": event, "iteration": iteration, "time": round(time.time(), 3),
                  **{k: _json_value(v) for k, v in (values or {}).items()}}
        try:
            with undo_on_failure(self.path, self.out / CURVES_DIR):
                with self.path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
                if curves and self._live is not None:
                    self._log_curves(iteration, values or {})
        except WriteError:
            self.active, self._live = False, None  # nothing more to write: the run ends with this error
            raise

    def _log_curves(self, iteration: int, values: Mapping[str, Any]) -> None:
        self._live.step = iteration
        for name, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._live.log_metric(name, float(value))
        self._live.make_summary()

    def say(self, message: str) -> None:
        """A console line (stdout), prefixed with the elapsed time."""
        if self.active:
            elapsed = time.monotonic() - self._start
            print(f"[{elapsed:8.1f}s] {message}", file=sys.stdout, flush=True)

    def close(self) -> None:
        """Write the final dvclive summary (all or nothing, as every record)."""
        live, self._live = self._live, None
        if live is not None:
            with undo_on_failure(self.out / CURVES_DIR):
                live.end()

    def abandon(self) -> None:
        """Stop without writing anything more (the run is ending with an error)."""
        self.active, self._live = False, None


def _open_live(folder: Path, resume: bool) -> Any:
    from dvclive import Live

    class AtomicSummaryLive(Live):
        """dvclive whose summary ``metrics.json`` is replaced atomically: never left empty or torn."""

        def make_summary(self) -> None:
            if self._step is not None:
                self.summary["step"] = self.step
            write_text_atomic(self.metrics_file, json.dumps(self.summary, indent=4) + "\n")

    return AtomicSummaryLive(dir=str(folder), resume=resume, dvcyaml=False, save_dvc_exp=False, report=None)
