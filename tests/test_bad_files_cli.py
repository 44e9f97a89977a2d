"""Bad files and folders the user's way (`python -m roloraexp.run` as a subprocess): each is one line,
never a traceback, and results.json says ``failed`` with it; damaged data is counted per split in
results.json and bounded by ``task.max_bad_rows``; a normal run's screen carries no third-party
warning. (Config mistakes, in-process: tests/test_bad_input.py.)
"""
import builtins
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import DATA, REPO, smoke
from roloraexp.run import run

BASE = ["model=tiny_roberta", "task=rte", "task.max_train_samples=32", "task.max_eval_samples=16",
        "trainer.max_steps=2", "logger=disabled", "trainer.save_adapters=false"]
ENV = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="disabled", HF_HUB_OFFLINE="1")


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "roloraexp.run", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)


def one_line_error(proc) -> str:
    """The run's error: exactly one ``error:`` line and no traceback on the screen."""
    screen = proc.stdout + proc.stderr
    assert "Traceback" not in screen, screen[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0][len("error: "):]


@pytest.fixture
def rte_copy(tmp_path):
    """A data_dir holding a copy of the shipped RTE files, to damage."""
    folder = tmp_path / "data" / "glue_data" / "RTE"
    shutil.copytree(DATA / "glue_data" / "RTE", folder)
    return tmp_path / "data", folder


def test_a_binary_data_file_is_one_line_naming_it(tmp_path, rte_copy):
    data, rte = rte_copy
    (rte / "dev.tsv").write_bytes(b"sentence1\tsentence2\tlabel\n" + bytes(range(128, 256)) * 4)
    proc = cli(*BASE, f"data_dir={data}", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 1
    error = one_line_error(proc)
    assert error == f"{rte / 'dev.tsv'} is not UTF-8 text (byte 26, line 2): is it the right file?"
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (result["status"], result["error"]) == ("failed", error)


def test_a_truncated_train_file_is_recorded_then_bounded(tmp_path, rte_copy):
    data, rte = rte_copy
    full = (rte / "train.tsv").read_bytes()
    cut = full[: int(len(full) * 0.45)]
    assert not cut.endswith(b"\n")  # cut in the middle of a row
    (rte / "train.tsv").write_bytes(cut)
    rows = cut.count(b"\n")  # the header and the whole rows; the cut one is the last line
    proc = cli(*BASE, f"data_dir={data}", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["data"]["train"] == {"file": str(rte / "train.tsv"), "rows": rows - 1, "skipped_rows": 1}
    assert result["data"]["dev"]["skipped_rows"] == 0
    screen = proc.stdout + proc.stderr
    assert f"skipped 1 of {rows} rows" in screen and "was it cut short?" in screen
    assert re.search(rf"skipped data rows +train: 1 of {rows}\n", proc.stdout)  # in the final summary too
    # The same file with no damage allowed: the run stops before any model, naming the file and row.
    proc = cli(*BASE, f"data_dir={data}", "task.max_bad_rows=0", f"hydra.run.dir={tmp_path}/strict", cwd=tmp_path)
    assert proc.returncode == 1
    error = one_line_error(proc)
    assert error.startswith(f"{rte / 'train.tsv'}: 1 of {rows} rows are damaged (a number of fields other than 4; "
                            f"the first on line {rows + 1}) (the file does not end with a line break")
    assert error.endswith("more than task.max_bad_rows=0 of the split allows")
    assert json.loads((tmp_path / "strict" / "results.json").read_text())["error"] == error


def test_a_run_folder_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    for where in ([f"hydra.run.dir={tmp_path}/a_file"], [f"hydra.run.dir={tmp_path}/a_file/run"],
                  [f"hydra.sweep.dir={tmp_path}/a_file", "-m", "seed=1,2"]):
        proc = cli(*BASE, f"data_dir={DATA}", *where, cwd=tmp_path)
        assert proc.returncode == 1, where
        key = where[0].split("=")[0]
        assert re.fullmatch(rf"the run folder {tmp_path}/a_file\S* (is a file, not a folder|cannot be written "
                            rf"\(Not a directory\)); set {key} to another folder", one_line_error(proc)), where
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """Checkpoints are written through a Python file: /dev/full stands for a full disk."""
    from roloraexp import checkpoint

    monkeypatch.setattr(checkpoint, "open", lambda path, mode: builtins.open("/dev/full", mode), raising=False)
    result = run(smoke("trainer.max_steps=2", "trainer.checkpoint_every=1"), tmp_path)
    assert result["status"] == "failed"
    assert result["error"].startswith(f"cannot write {tmp_path / 'checkpoint.pt.tmp'}: No space left on device (")
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


def test_a_normal_run_prints_no_third_party_warning(tmp_path):
    proc = cli(*BASE, f"data_dir={DATA}", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    screen = proc.stdout + proc.stderr
    logged = re.findall(r"\]\[([\w.]+)\]\[(WARNING|ERROR)\]", screen)
    assert [name for name, _ in logged if not name.startswith("roloraexp")] == [], screen[-3000:]
    assert "Warning:" not in screen, screen[-3000:]  # warnings.warn from any library
