"""``python tests/helpers/die_at.py WHEN N [SIGNAL] -- OVERRIDES``: ``python -m roloraexp.run OVERRIDES``
that sends itself a signal (SIGKILL by default) at a chosen point, for the resume tests:

* ``step N``: right after optimizer step N, before anything else of that step (its evaluation,
  its checkpoint) happens;
* ``phase_end N``: when phase N (1-based) has finished its last step, before the method's phase end;
* ``phase_start N``: when phase N (1-based) starts, after the previous phase's end was checkpointed.
"""
import os
import signal
import sys

from roloraexp import train
from roloraexp.run import cli

when, n = sys.argv[1], int(sys.argv[2])
sig = getattr(signal, sys.argv[3]) if sys.argv[3] != "--" else signal.SIGKILL
sys.argv = [sys.argv[0], *sys.argv[sys.argv.index("--") + 1:]]


def die():
    os.kill(os.getpid(), sig)


original_step, original_phase = train.Trainer._optimizer_step, train.Trainer._run_phase


def step(self, optimizer, scheduler, ctx):
    original_step(self, optimizer, scheduler, ctx)
    if when == "step" and ctx.step == n:
        die()


def run_phase(self, phase, ctx, bar):
    if when == "phase_start" and phase + 1 == n:
        die()
    if when == "phase_end" and phase + 1 == n:
        on_end = self.method.on_phase_end

        def end_then_die(c):
            die()
            on_end(c)
        self.method.on_phase_end = end_then_die
    original_phase(self, phase, ctx, bar)


train.Trainer._optimizer_step, train.Trainer._run_phase = step, run_phase
cli()
