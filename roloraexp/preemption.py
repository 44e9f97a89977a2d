"""Stop signals: SLURM sends SIGTERM (preemption, ``scancel``) or a chosen signal before a time limit
(``--signal=USR1@120``; submitit uses SIGUSR2), shortly before it kills the job. The run notes the
signal, finishes the optimizer step it is in, writes a checkpoint, and then hands the signal on:
to the handler that was there before (submitit's, which requeues the job) or, with none, exits with
the conventional status 128 + signal number. Rerunning the same command resumes from the checkpoint.
"""
from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGUSR1", "SIGUSR2")) if s is not None)


class Preempted(Exception):
    """Raised at a step boundary after a stop signal, once the checkpoint is written."""

    def __init__(self, signum: int, step: int, previous):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; the checkpoint is saved: "
                         f"run the same command again to resume")
        self.signum, self.step, self.previous = signum, step, previous

    def hand_over(self) -> None:
        """Give the signal to whoever handled it before the run (submitit requeues), else exit."""
        if callable(self.previous):
            self.previous(self.signum, None)
        raise SystemExit(128 + self.signum)


class StopSignals:
    """Context manager: while active, a stop signal sets ``received`` instead of killing the process."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame) -> None:
        if self.received is None:
            log.warning("received %s: stopping after this optimizer step, with a checkpoint",
                        signal.Signals(signum).name)
        self.received = signum

    def previous(self, signum: int):
        handler = self._previous.get(signum)
        return handler if callable(handler) and handler not in (signal.SIG_DFL, signal.SIG_IGN) else None

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
