"""``python -m roloraexp.run`` with process 1's clock running 10,000 times fast (run under torchrun
by tests/test_distributed.py): a checkpoint due by the clock is then due on one process only, and the
run must still agree on when to write one (a process alone in the checkpoint's barrier hangs the job)."""
import os
import time
import types

import roloraexp.train
from roloraexp.run import cli

if os.environ.get("RANK") == "1":
    start = time.time()
    roloraexp.train.time = types.SimpleNamespace(time=lambda: start + (time.time() - start) * 10_000,
                                                 perf_counter=time.perf_counter)

if __name__ == "__main__":
    cli()
