"""A training run from start (or resume) to ``model_final.pth`` (``itersg train`` / ``itersg pretrain-detr``).

On-disk layout of ``OUT`` (only rank 0 writes):

* ``config_resolved.yaml``: the resolved params of the run (loadable with ``--params``).
* ``log.jsonl``: the JSON-lines log (``logs.py``); ``dvclive/``: training curves.
* ``checkpoints/model_{iteration:07d}.pth`` (every ``train.checkpoint_every`` iterations and every
  ``train.checkpoint_minutes``): full training states (model, optimizer, scheduler,
  scaler, iteration, data position, every rank's RNG states and partial loss averages, params and
  their fingerprint); the newest ``train.keep_last`` are kept, plus those at
  ``study.eval_iterations`` (train only), which the evaluation reads.
* ``model_final.pth``: ``{"model", "variant", "stage", "iteration", "params", "fingerprint"}``.
* ``stale-<time>/``: outputs of an earlier run with other training params, moved out of the way.

Restarting the same command resumes from the newest readable checkpoint written with the same
training params (see ``provenance``); a finished run returns at once. SIGTERM/SIGUSR1 or
``stop_at`` write a checkpoint at the next iteration boundary and return ``EXIT_PREEMPTED``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from itersg.engine import distributed as dist_utils
from itersg.engine.checkpoint import (
    atomic_save,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    newest_valid_checkpoint,
    prune_checkpoints,
    remove_stale_temp_files,
)
from itersg.engine.logs import CURVES_DIR, LOG_NAME, TrainingLog
from itersg.engine.loop import RunningMeans, TrainingDiverged, move_to, train_step
from itersg.engine.optim import build_lr_scheduler, build_optimizer, lr_drop_iteration
from itersg.engine.provenance import fingerprint, software
from itersg.engine.rng import rng_state, seed_everything, set_rng_state
from itersg.engine.sampler import SeededSamples, TrainingBatchSampler, per_rank_batch, stream_position
from itersg.engine.signals import EXIT_PREEMPTED, StopRequest
from itersg.engine.tasks import build_task
from itersg.engine.validation import validate, validation_subset
from itersg.errors import UserError
from itersg.files import WriteError, check_writable_folder, holds_only, write_text_atomic
from itersg.precision import Precision

CHECKPOINT_FORMAT = 1
FINAL_NAME = "model_final.pth"
CONFIG_NAME = "config_resolved.yaml"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "iteration", "rng", "running_means",
                   "data_position", "fingerprint")
RUN_WRITES = (CONFIG_NAME, LOG_NAME, CURVES_DIR, CHECKPOINT_DIR, FINAL_NAME)  # what a run writes in OUT


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds only what runs write there (``stale-*`` included): training there loses nothing."""
    return holds_only(folder, (*RUN_WRITES, "stale-*"))


def finished_run(out: Path, run_fingerprint: str) -> dict[str, Any] | None:
    """The metadata of ``OUT/model_final.pth`` if it exists, loads and has ``run_fingerprint``."""
    path = out / FINAL_NAME
    if not path.exists():
        return None
    try:
        final = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a torn file from an older, non-atomic writer: train again
        warnings.warn(f"ignoring unreadable {path} ({type(err).__name__}); training again", stacklevel=2)
        return None
    if final.get("fingerprint") != run_fingerprint:
        return None
    return {k: v for k, v in final.items() if k != "model"}


def run_training(params: Mapping[str, Any], stage: str, out: str | Path, variant: str | None = None,
                 init: str | Path | None = None, stop_at: int | None = None) -> int:
    """Train ``stage`` ("train": IterativeSG ``variant``; "pretrain_detr": DETR) into ``out``.

    Returns 0 when ``model_final.pth`` is written (or was already there), ``EXIT_PREEMPTED`` when a
    stop signal or ``stop_at`` ended the run early with a checkpoint. The exit status of a run is
    rank 0's: in a multi-process run the other ranks return 0 after a clean stop and every rank then
    ignores SIGTERM, so that a launcher which ends the step at the first non-zero exit
    (``srun --kill-on-bad-exit``) reports 75.
    """
    launch = dist_utils.detect_launch()
    if stage == "train" and variant is not None:  # the variant's own recipe (SpeaQ's), recorded as run
        from itersg.config import for_variant

        params = for_variant(params, variant)
    elif stage == "pretrain_detr" and variant is not None:  # EGTR's Deformable DETR: its own schedule
        from itersg.config import for_pretraining

        params = for_pretraining(params, variant)
    train = params["train"]
    device = dist_utils.select_device(launch, train["gpus"], train["nodes"], train["device"])
    dist_utils.init_process_group(launch, device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        status = TrainingRun(params, stage, Path(out), variant, launch, device).run(init, stop_at)
        return status if launch.is_main else 0
    finally:
        torch.use_deterministic_algorithms(deterministic)
        dist_utils.destroy_process_group()


class TrainingRun:
    """The state and steps of one run (one instance per process)."""

    def __init__(self, params: Mapping[str, Any], stage: str, out: Path, variant: str | None,
                 launch: dist_utils.Launch, device: torch.device) -> None:
        self.params = dict(params)
        self.train_cfg = params["train"]
        self.stage = stage
        self.out = out
        self.variant = variant
        self.launch = launch
        self.device = device
        self.fingerprint = fingerprint(params, stage, variant)
        self.checkpoints = out / CHECKPOINT_DIR

    # --- the run -------------------------------------------------------------------------------------

    def run(self, init: str | Path | None, stop_at: int | None) -> int:
        finished = finished_run(self.out, self.fingerprint)
        if finished is not None:
            if self.launch.is_main:
                print(f"{self.out / FINAL_NAME} is complete (iteration {finished.get('iteration')}, same "
                      "params): nothing to do", flush=True)
            return 0
        if self.device.type == "cpu":  # bit-exact resume on CPU; GPU kernels stay fast (and not bit-exact)
            torch.use_deterministic_algorithms(True)
        check_writable_folder(self.out)  # a read-only --out: one line before the model is even built
        # From here a stop signal (even one during start-up) only ends the run at an iteration boundary.
        with StopRequest() as stop_request:
            self._build()
            resumed = self._resume()
            if resumed is None:
                seed_everything(int(self.params["seed"]) + self.launch.rank)
                if init is not None:
                    self._load_init(Path(init))
            start = resumed if resumed is not None else 0
            try:
                return self._train(start, resumed, init, stop_request, stop_at)
            except WriteError as err:  # full disk, read-only folder: what a rerun of the command does
                raise err.with_advice(self._rerun_advice(err)) from None

    def _train(self, start: int, resumed: int | None, init: str | Path | None, stop_request: StopRequest,
               stop_at: int | None) -> int:
        self.log = TrainingLog(self.out, self.launch.is_main, resumed)
        try:
            self._announce(start, resumed is not None, init)
            status = self._loop(start, stop_request, stop_at)
            if status == 0:
                self._write_final()
        except BaseException:
            self.log.abandon()  # writing the curves' summary now could only hide the error
            raise
        self.log.close()
        return status

    def _rerun_advice(self, err: WriteError) -> str:
        """What a rerun of the same command will do: resume from the newest checkpoint, or start over."""
        found = list_checkpoints(self.checkpoints)
        if (self.out / FINAL_NAME).exists():  # only the last summary of the curves failed
            then = f"{self.out / FINAL_NAME} is complete"
        elif found:
            then = f"it resumes from iteration {found[-1][0]} ({found[-1][1]})"
        else:
            then = "it starts from iteration 0 (no checkpoint was written yet)"
        return f"{err.fix} and rerun the same command: {then}"

    def _build(self) -> None:
        """Task (model, loss, data), optimizer, schedule and precision; identical weights on every rank."""
        seed_everything(int(self.params["seed"]))
        self.task = build_task(self.params, self.stage, self.variant)
        self.model = self.task.model.to(self.device)
        self.criterion = self.task.criterion.to(self.device)
        self.optimizer = build_optimizer(self.model, self.train_cfg, self.device)
        self.scheduler = build_lr_scheduler(self.optimizer, self.task.iterations,
                                            self.train_cfg["lr_drop_fraction"])
        self.precision = Precision(self.train_cfg["precision"], self.device)
        self.means = RunningMeans()

    def _loop(self, start: int, stop_request: StopRequest, stop_at: int | None) -> int:
        iterations = self.task.iterations
        if start >= iterations:
            return 0
        ddp = self._wrap_ddp()
        batches = iter(self._train_loader(start))
        means = self.means
        tick, tick_iteration = time.monotonic(), start
        # A checkpoint on a wall-clock timer too: a job killed without warning loses at most this much.
        checkpoint_seconds = 60 * self.train_cfg["checkpoint_minutes"]
        last_checkpoint = time.monotonic()
        nonfinite_in_a_row = 0
        for iteration in range(start, iterations):
            images, targets = next(batches)
            images, targets = move_to(images, self.device), move_to(targets, self.device)
            lrs = {f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups}  # used by this update
            stats, finite = train_step(ddp, self.criterion, self.optimizer, self.scheduler, self.precision,
                                       images, targets, self.train_cfg["clip_max_norm"])
            done = iteration + 1
            timer_due = 0 < checkpoint_seconds <= time.monotonic() - last_checkpoint
            stop, timer_due = dist_utils.any_rank([stop_request.requested or stop_at == done, timer_due], self.device)
            if finite:
                nonfinite_in_a_row = 0
                means.add(stats)
            else:
                nonfinite_in_a_row += 1
                self._skipped_step(done, stats, nonfinite_in_a_row)
            if done % self.train_cfg["log_every"] == 0 or done == iterations:
                rate = (done - tick_iteration) / max(time.monotonic() - tick, 1e-9)
                self._log_train(done, means.pop(), lrs, rate)
                tick, tick_iteration = time.monotonic(), done
            if done % self.train_cfg["val_every"] == 0:
                self._validate(done)
            if stop or timer_due or done % self.train_cfg["checkpoint_every"] == 0 \
                    or done in self.task.keep_iterations or done == iterations:
                self._save_checkpoint(done, means)
                last_checkpoint = time.monotonic()
            if stop and done < iterations:
                reason = (stop_request.received.name if stop_request.received
                          else f"stop_at={stop_at}" if stop_at == done else "signal on another rank")
                self.log.record("preempted", done, {"reason": reason, "exit_status": EXIT_PREEMPTED})
                self.log.say(f"stopped at iteration {done} ({reason}); rerun the same command to resume "
                             f"(exit status {EXIT_PREEMPTED})")
                self.log.close()
                if self.launch.distributed:
                    stop_request.ignore_sigterm_after()
                dist_utils.barrier()  # the other ranks leave only once rank 0 has written everything
                return EXIT_PREEMPTED
        return 0

    # --- pieces --------------------------------------------------------------------------------------

    def _wrap_ddp(self) -> torch.nn.Module:
        if not self.launch.distributed:
            return self.model
        device_ids = [self.device] if self.device.type == "cuda" else None
        # The VoVNet-FPN DETR variants compute FPN levels that the transformer does not read (their
        # weights count in the published parameter totals); DDP must not wait for their gradients.
        return DistributedDataParallel(self.model, device_ids=device_ids, find_unused_parameters=True)

    def _train_loader(self, start_iteration: int) -> DataLoader:
        sampler = TrainingBatchSampler(len(self.task.train_set), self.task.global_batch, self.launch.rank,
                                       self.launch.world_size, int(self.params["seed"]), start_iteration)
        workers = self.params["data"]["num_workers"]
        # A private generator: creating the loader iterator must not draw from the global RNG
        # (that would make a resumed run differ from an uninterrupted one).
        return DataLoader(SeededSamples(self.task.train_set), batch_sampler=sampler, num_workers=workers,
                          collate_fn=self.task.collate, generator=torch.Generator(),
                          persistent_workers=workers > 0, pin_memory=self.device.type == "cuda")

    def _val_loader(self) -> DataLoader | None:
        if self.task.val_set is None:
            return None
        subset = validation_subset(self.task.val_set, self.train_cfg["val_images"], self.launch.rank,
                                   self.launch.world_size)
        batch = per_rank_batch(self.task.global_batch, self.launch.world_size)
        return DataLoader(subset, batch_size=batch, shuffle=False, num_workers=0,
                          collate_fn=self.task.collate)

    def _validate(self, iteration: int) -> None:
        loader = self._val_loader()
        if loader is None:
            return
        start = time.monotonic()
        results = validate(self.model, self.criterion, loader, self.precision, self.device, self.task.predict,
                           self.task.score, self.task.ground_truth)
        results["val/seconds"] = round(time.monotonic() - start, 3)
        self.log.record("val", iteration, results, curves=True)
        self.log.say(f"it {iteration}: " + ", ".join(f"{k} {v:.4g}" for k, v in results.items()))

    def _log_train(self, iteration: int, means: dict[str, float], lrs: dict[str, float], rate: float) -> None:
        values = {**means, "lr": lrs.get("lr_rest", float("nan")), **lrs, "iter_per_s": rate}
        self.log.record("train", iteration, values, curves=True)
        eta = (self.task.iterations - iteration) / max(rate, 1e-9)
        self.log.say(f"it {iteration}/{self.task.iterations} loss {means.get('loss', float('nan')):.4f} "
                     f"lr {lrs.get('lr_rest', float('nan')):.2e} {rate:.2f} it/s eta {eta / 60:.1f} min")

    def _skipped_step(self, iteration: int, stats: dict[str, torch.Tensor], in_a_row: int) -> None:
        """Log a step skipped for a non-finite loss or gradient; stop after too many in a row."""
        values = {k: float(v) for k, v in stats.items() if k in ("loss", "grad_norm")}
        self.log.record("skipped_step", iteration, {**values, "in_a_row": in_a_row})
        self.log.say(f"it {iteration}: skipped the update (loss {values['loss']:.4g}, gradient norm "
                     f"{values['grad_norm']:.4g}; {in_a_row} in a row)")
        if in_a_row >= self.train_cfg["max_nonfinite_steps"]:
            raise TrainingDiverged(f"the loss or its gradients were not finite for {in_a_row} steps in a row "
                                   f"(up to iteration {iteration}, train.max_nonfinite_steps); "
                                   + self._divergence_hint())

    def _divergence_hint(self) -> str:
        return (f"lower train.lr / train.lr_backbone or check the data; the last checkpoints are in "
                f"{self.checkpoints}")

    def _announce(self, start: int, resumed: bool, init: str | Path | None) -> None:
        ranks = dist_utils.all_gather_objects(dist_utils.rank_info(self.launch, self.device))
        if not self.launch.is_main:
            return
        write_text_atomic(self.out / CONFIG_NAME, yaml.safe_dump(self.params, sort_keys=False))
        gpus = dist_utils.visible_gpus()
        info = {
            "stage": self.stage, "variant": self.variant, "resumed": resumed,
            "init": str(init) if init else None,
            "fingerprint": self.fingerprint, "world_size": self.launch.world_size,
            "launcher": self.launch.launcher, "device": str(self.device), "gpus_visible": gpus,
            "global_batch": self.task.global_batch, "iterations": self.task.iterations,
            "lr_drop_iteration": lr_drop_iteration(self.task.iterations,
                                                   self.train_cfg["lr_drop_fraction"]),
            "precision": self.precision.name, "train_images": len(self.task.train_set), "ranks": ranks,
            **software(),
        }
        self.log.record("start", start, info)
        self.log.say(f"{self.stage} {self.variant or ''}: {'resuming at' if resumed else 'starting at'} "
                     f"iteration {start}/{self.task.iterations}; {self.launch.world_size} process(es) "
                     f"({self.launch.launcher}) on {self.device}; GPUs visible: {len(gpus)} {gpus}")

    # --- checkpoints ---------------------------------------------------------------------------------

    def _state(self, iteration: int, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
            "iteration": iteration,
            "data_position": stream_position(iteration, self.task.global_batch, len(self.task.train_set)),
            "rng": [r["rng"] for r in per_rank],
            "running_means": [r["means"] for r in per_rank],
            "world_size": self.launch.world_size,
            "stage": self.stage,
            "variant": self.variant,
            "params": self.params,
            "fingerprint": self.fingerprint,
        }

    def _save_checkpoint(self, iteration: int, means: RunningMeans) -> None:
        # Every rank's generators and partial loss window.
        per_rank = dist_utils.all_gather_objects({"rng": rng_state(), "means": means.state_dict()})
        if self.launch.is_main:
            path = self.checkpoints / checkpoint_name(iteration)
            atomic_save(self._state(iteration, per_rank), path)
            pruned = prune_checkpoints(self.checkpoints, self.train_cfg["keep_last"],
                                       self.task.keep_iterations)
            self.log.record("checkpoint", iteration, {"path": str(path), "pruned": [p.name for p in pruned]})

    def _resume(self) -> int | None:
        """Load the newest valid checkpoint into model/optimizer/...; its iteration, or None."""
        found = None
        if self.launch.is_main:
            remove_stale_temp_files(self.checkpoints)
            found = newest_valid_checkpoint(self.checkpoints, CHECKPOINT_KEYS, self.fingerprint)
            self._set_aside_stale_outputs(keep_checkpoints=found is not None)
        path = dist_utils.broadcast_object(str(found[0]) if found else None)
        if path is None:
            return None
        state = found[1] if found else load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.scaler.load_state_dict(state["scaler"])
        iteration = int(state["iteration"])
        expected = stream_position(iteration, self.task.global_batch, len(self.task.train_set))
        if state["data_position"] != expected:
            warnings.warn(f"{path}: data position {state['data_position']} does not match {expected}; the "
                          "training split changed size since the checkpoint", stacklevel=2)
        if len(state["rng"]) == self.launch.world_size:
            set_rng_state(state["rng"][self.launch.rank])
            self.means.load_state_dict(state["running_means"][self.launch.rank], self.device)
        else:
            warnings.warn(f"{path} was written by {len(state['rng'])} processes, now "
                          f"{self.launch.world_size}: random streams restart from the seed", stacklevel=2)
            seed_everything(int(self.params["seed"]) + self.launch.rank + iteration)
        if self.launch.is_main:
            print(f"resuming from {path} (iteration {iteration})", flush=True)
        return iteration

    def _set_aside_stale_outputs(self, keep_checkpoints: bool) -> None:
        """Move outputs of another run (other params, or unreadable) to ``OUT/stale-<time>/``; delete nothing.

        That is ``model_final.pth`` when it is not this run's, and ``checkpoints/`` when none of its
        files can resume this run.
        """
        stale = []
        if (self.out / FINAL_NAME).exists():
            stale.append(self.out / FINAL_NAME)  # finished_run() found it is not this run's
        if not keep_checkpoints and list_checkpoints(self.checkpoints):
            stale.append(self.checkpoints)
        if not stale:
            return
        target = self.out / f"stale-{time.strftime('%Y%m%d-%H%M%S')}"
        suffix = 1
        while target.exists():
            target, suffix = target.with_name(f"{target.name.split('.')[0]}.{suffix}"), suffix + 1
        target.mkdir(parents=True)
        for path in stale:
            path.rename(target / path.name)
        warnings.warn(f"{', '.join(p.name for p in stale)} in {self.out} came from a run with other training "
                      f"params (or could not be read); moved to {target}", stacklevel=2)

    def _load_init(self, path: Path) -> None:
        if self.task.load_init is None:
            raise UserError(f"--init is not supported for {self.stage}")
        report = self.task.load_init(self.model, path)
        if self.launch.is_main:
            print(f"initialised from {path}: {report}", flush=True)

    def _write_final(self) -> None:
        if self.launch.is_main:
            final = {"model": self.model.state_dict(), "variant": self.variant, "stage": self.stage,
                     "iteration": self.task.iterations, "params": self.params,
                     "fingerprint": self.fingerprint}
            path = atomic_save(final, self.out / FINAL_NAME)
            self.log.record("finished", self.task.iterations, {"path": str(path)})
            self.log.say(f"wrote {path}")
            self.log.close()
        dist_utils.barrier()
