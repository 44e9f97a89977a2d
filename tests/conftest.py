import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

# Tests never reach the hub (none here, none in CI): fail fast instead of waiting on timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"  # the small real slices shipped in the repository (scripts/make_data_slices.py)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Every test that reads real data needs it: fail loudly, never skip silently.
assert SHARED_DATA.is_dir(), f"the shared data must sit beside the repo at {SHARED_DATA}"


def compose_config(*overrides: str):
    """The real Hydra config, as `python -m roloraexp.run` composes it."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def smoke(*overrides: str):
    """A real config shrunk for CPU tests: tiny model, a few steps, no logger, local data."""
    return compose_config("model=tiny_roberta", "task=rte", f"data_dir={SHARED_DATA}", "logger=disabled",
                          "trainer.max_steps=6", "trainer.batch_size=8", "trainer.eval_batch_size=32",
                          "task.max_train_samples=48", "task.max_eval_samples=32", "task.max_seq_length=64",
                          "trainer.save_adapters=false", *overrides)


@pytest.fixture
def shared_data() -> Path:
    """The real data shared next to the repo (/work/shared/data; ../shared/data in CI)."""
    return SHARED_DATA
