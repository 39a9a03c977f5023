"""Graceful stop on SIGTERM / SIGUSR1 (SLURM preemption, time limit, ``--signal=USR1@120``).

The handler only records the request; the training loop checks it at the next iteration boundary,
writes a checkpoint and exits with ``EXIT_PREEMPTED`` so that a retry or requeue resumes there.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

# EX_TEMPFAIL of sysexits.h: "temporary failure, the user is invited to retry".
EXIT_PREEMPTED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Installs the handlers while active (a context manager) and remembers the first signal."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}
        self._ignore_sigterm_after = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            print(f"itersg: received {self.received.name}; checkpointing at the next iteration boundary",
                  file=sys.stderr, flush=True)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def ignore_sigterm_after(self) -> None:
        """On leaving the context, ignore SIGTERM for the rest of the process instead of restoring it.

        For a rank that stopped with a checkpoint: ``srun --kill-on-bad-exit`` ends the whole step
        when rank 0 exits with ``EXIT_PREEMPTED``, and a rank still shutting down would die of that
        SIGTERM and make srun report 143 instead of 75. ``SIG_IGN`` (unlike a Python handler) stays in
        force through interpreter shutdown.
        """
        self._ignore_sigterm_after = True

    def __enter__(self) -> StopRequest:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            if sig == signal.SIGTERM and self._ignore_sigterm_after:
                handler = signal.SIG_IGN
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
