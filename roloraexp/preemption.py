"""Stop signals: SLURM sends SIGTERM (preemption, ``scancel``) or a chosen signal before a time limit
(``--signal=USR1@120``; submitit uses SIGUSR2), shortly before it kills the job. The run notes the
signal, finishes the optimizer step it is in, writes a checkpoint, and then hands the signal on:
to the handler that was there before (submitit's, which requeues the job) or, with none, exits with
the conventional status 128 + signal number. Rerunning the same command resumes from the checkpoint.
Ctrl-C (SIGINT) does the same; a second Ctrl-C interrupts at once, without a checkpoint (for a run
stuck in a long evaluation, say).
"""
from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT"))
                if s is not None)


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
            log.warning("received %s: stopping after this optimizer step, with a checkpoint%s",
                        signal.Signals(signum).name,
                        " (Ctrl-C again stops at once, without one)" if signum == signal.SIGINT else "")
        self.received = signum
        if signum == signal.SIGINT:  # the next Ctrl-C is Python's KeyboardInterrupt again
            signal.signal(signal.SIGINT, self._previous.get(signal.SIGINT, signal.default_int_handler))

    def previous(self, signum: int):
        """The handler to pass the signal on to: none for Python's own Ctrl-C handler (it would only
        raise KeyboardInterrupt after the checkpoint: the run exits 130 instead)."""
        handler = self._previous.get(signum)
        passive = (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler)
        return handler if callable(handler) and handler not in passive else None

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
