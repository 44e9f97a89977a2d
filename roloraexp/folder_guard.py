"""A run folder holds one run at a time, and a run never overwrites another config's results.

* ``hold(folder)``: the run holds ``run.lock`` in its folder (pid, host, since when) while it runs. A
  second run into a held folder stops with one line naming the owner (``FolderRefused``). The lock is
  created whole or not at all (written to a temporary file, then hard-linked to its name, which fails
  if the name exists; ``O_CREAT | O_EXCL`` where links are not supported), so two runs can never both
  hold it. A lock whose owner is gone (``kill -9``, a node that died) is taken over:

  - same host: the owner's pid no longer exists, or now belongs to another process (its start time
    differs);
  - the same SLURM job (requeued, possibly on another node): SLURM never runs one job twice at once;
  - another host: when the lock has had no heartbeat for ``STALE_AFTER_S`` (an hour). Its holder
    touches it every ``HEARTBEAT_S``; a pid cannot be checked across hosts, and a lock that only aged
    would be stolen from any run longer than the age.

  Under data parallelism only process 0 holds the lock: its peers write into the same folder.
* ``completed_before(cfg, folder)``: the folder's completed results of this very config, which a run
  returns instead of running again; ``set_aside_other_run(cfg, folder)``: another config's results
  are set aside (below) before this run writes its own.
* ``set_aside(folder)``: a previous run's files are renamed with its time (``results.<YYYYmmdd-HHMMSS>.json``,
  the checkpoints, the adapter files) before a run of another config writes its own; the table
  sweeps (roloraexp/sweeps/table_grid.py) use the same function for their changed cells.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

from .config import config_identity, differences
from .results import RESULTS_FILE, ResultError, RunResult, read_result

LOCK = "run.lock"
HEARTBEAT_S = 60
STALE_AFTER_S = 3600
# A run's own files, as run.py, the trainer and checkpoint.py write them. Named here, not in
# checkpoint.py: this module stays free of torch, for the table sweep.
CHECKPOINT, PREVIOUS = "checkpoint.pt", "checkpoint.previous.pt"
BEST_STATE, FINAL_STATE = "best_trainable.pt", "final_trainable.pt"
RUN_FILES = (RESULTS_FILE, CHECKPOINT, PREVIOUS, BEST_STATE, FINAL_STATE)


class FolderRefused(Exception):
    """A run cannot use this folder (another live run holds it, or a previous run's results cannot be
    set aside): one line; the run writes nothing there."""


def is_main_process() -> bool:
    """Process 0 of a data-parallel run (torchrun / accelerate set RANK; a plain multi-task srun only
    SLURM_PROCID, until roloraexp.distributed exports RANK)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    return int(os.environ.get("SLURM_NTASKS", "1")) <= 1 or int(os.environ.get("SLURM_PROCID", "0")) == 0


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux /proc), telling a reused pid from its first owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]   # field 22; the command name before ")" may hold spaces


def _slurm_job() -> str | None:
    job = os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job


def _me() -> dict:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "since": datetime.now().astimezone().isoformat(sep=" ", timespec="seconds"),
            "process_start": _process_start(pid), "slurm_job": _slurm_job(), "token": uuid.uuid4().hex,
            "command": " ".join(sys.argv)[:500]}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: it exists
        return True
    return True


def _gone(owner: dict, age_s: float) -> str | None:
    """Why the lock's owner is gone, or None while it may still run."""
    me = _me()
    if owner.get("host") == me["host"]:
        pid = owner.get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            return "that process no longer exists"
        start = owner.get("process_start")
        if start is not None and _process_start(pid) not in (None, start):
            return "its pid now belongs to another process"
        return None
    if owner.get("slurm_job") and owner.get("slurm_job") == me["slurm_job"]:
        return f"it was this SLURM job ({me['slurm_job']}), now requeued"
    if age_s > STALE_AFTER_S:
        return f"no heartbeat from {owner.get('host')} for {age_s / 60:.0f} minutes"
    return None


def _read(path: Path) -> tuple[bytes | None, float]:
    try:
        with open(path, "rb") as f:
            return f.read(), os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None, 0.0


def _write_new(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` in one step; False if it exists."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:   # a file system without hard links: an exclusive create, then the content
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    finally:
        tmp.unlink(missing_ok=True)


class FolderLock:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.info = _me()
        self.took_over: str | None = None   # why a stale lock was taken over, for the run to log
        self._stop = threading.Event()

    def acquire(self) -> "FolderLock":
        data = json.dumps(self.info, indent=1).encode()
        for _ in range(10):   # each pass ends in a decision unless the lock changed hands meanwhile
            if _write_new(self.path, data):
                break
            raw, mtime = _read(self.path)
            if raw is None:
                continue   # released meanwhile
            try:
                owner = json.loads(raw)
            except ValueError:   # only a half-written fallback lock, or an edited one
                owner = {}
            owner = owner if isinstance(owner, dict) else {}
            age = time.time() - mtime
            why = _gone(owner, age) if owner else ("unreadable" if age > 10 else None)
            if why is None:
                raise FolderRefused(self.busy_message(owner))
            if self._take_over(raw, data):
                self.took_over = f"{self.path} was left by pid {owner.get('pid')} on {owner.get('host')} ({why})"
                break
            time.sleep(0.2)   # another run is taking it over right now: see who won
        else:
            raise FolderRefused(f"{self.folder} is contended: its lock {self.path} keeps changing hands")
        threading.Thread(target=self._heartbeat, name="roloraexp-folder-lock", daemon=True).start()
        return self

    def _take_over(self, stale: bytes, data: bytes) -> bool:
        """Replace the stale lock by ours, if it is still the one judged stale: under a short-lived
        guard file, so that of two runs finding the same stale lock only one takes it."""
        guard = self.path.with_name(self.path.name + ".takeover")
        if not _write_new(guard, b""):
            with contextlib.suppress(OSError):
                if time.time() - guard.stat().st_mtime > 60:   # its writer died within these lines
                    guard.unlink()
            return False
        try:
            if _read(self.path)[0] != stale:
                return False
            tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
            return True
        finally:
            guard.unlink(missing_ok=True)

    def _mine(self) -> bool:
        raw, _ = _read(self.path)
        try:
            return raw is not None and json.loads(raw).get("token") == self.info["token"]
        except ValueError:
            return False

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._mine():   # never remove a lock another run has (wrongly) taken over
            self.path.unlink(missing_ok=True)

    def busy_message(self, owner: dict) -> str:
        who = f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('since')}"
        if owner.get("host") != self.info["host"]:
            hint = (f"wait for it, or use another folder; if that run is gone, its lock is taken over after "
                    f"{STALE_AFTER_S // 60} minutes without a heartbeat (or delete {self.path})")
        else:
            hint = "wait for it to end, or use another folder"
        return f"{self.folder} is in use by another run ({who}): {hint}"


_held: dict[Path, FolderLock] = {}   # the folders this process holds (cli() takes a run's before Hydra starts)


def unusable(folder: Path, key: str = "hydra.run.dir") -> str | None:
    """Why ``folder`` cannot hold a run (a file, not writable, no space, a parent that is a file), as one
    line naming ``key``, the setting that chose it; None when it can. Made when missing."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test.{os.getpid()}"  # per process: two runs starting at once do not race
        probe.write_text("probe")
        probe.unlink()
    except OSError as e:
        what = "is a file, not a folder" if folder.is_file() else f"cannot be written ({e.strerror or e})"
        return f"the run folder {folder} {what}; set {key} to another folder"
    return None


def acquire(folder: Path) -> FolderLock | None:
    """Hold ``folder`` for this process (None: already held here, or not process 0). Raises FolderRefused."""
    key = Path(folder).resolve()
    if key in _held or not is_main_process():
        return None
    key.mkdir(parents=True, exist_ok=True)
    lock = _held[key] = FolderLock(key).acquire()
    return lock


def took_over(folder: Path) -> str | None:
    """Why this process took over a stale lock on ``folder``, once (for the run's log)."""
    lock = _held.get(Path(folder).resolve())
    if lock is None:
        return None
    why, lock.took_over = lock.took_over, None
    return why


def release(lock: FolderLock | None) -> None:
    if lock is not None:
        lock.release()
        _held.pop(lock.folder, None)


@contextlib.contextmanager
def hold(folder: Path):
    """``with hold(folder):`` the folder is this process's (see ``acquire``)."""
    lock = acquire(folder)
    try:
        yield lock
    finally:
        release(lock)


def set_aside(folder: Path, names=RUN_FILES) -> list[Path]:
    """Rename a previous run's files in ``folder`` to ``<stem>.<time>.<suffix>`` (its results.json's
    time: when that run ended), never over an existing file. Returns the new paths."""
    folder = Path(folder)
    present = [folder / n for n in names if (folder / n).exists()]
    if not present:
        return []
    when = (folder / RESULTS_FILE).stat().st_mtime if (folder / RESULTS_FILE).exists() else time.time()
    stamp = datetime.fromtimestamp(when).strftime("%Y%m%d-%H%M%S")
    moved = []
    for path in present:
        stem = path.name[: -len(path.suffix)]
        for n in range(1000):
            target = path.with_name(f"{stem}.{stamp}{f'-{n}' if n else ''}{path.suffix}")
            if not target.exists():
                break
        path.replace(target)
        moved.append(target)
    return moved


# ---------------------------------------------------------------------------- the results a folder holds
def completed_before(cfg, folder: Path) -> RunResult | None:
    """A completed results.json of this very config in the run folder (trainer.resume=auto only)."""
    if str(cfg.trainer.get("resume", "auto")) != "auto":
        return None
    try:
        previous = read_result(Path(folder) / RESULTS_FILE)
    except ResultError:
        return None
    if not previous.completed or not previous.config:
        return None
    return previous if config_identity(previous.config) == config_identity(cfg) else None


def set_aside_other_run(cfg, folder: Path, log) -> None:
    """A results.json of another config (completed, failed or preempted) is not overwritten: it, its
    run's checkpoints and adapter files are renamed with its time (``set_aside``). The same config's
    failed or preempted results are this run's to replace (it resumes from the checkpoint)."""
    path = Path(folder) / RESULTS_FILE
    if not path.exists():
        return
    try:
        previous = read_result(path)
        theirs = config_identity(previous.config) if previous.config else None
    except ResultError:
        previous, theirs = None, None
    mine = config_identity(cfg)
    if theirs == mine:
        return
    try:
        moved = set_aside(folder)
    except OSError as e:
        raise FolderRefused(f"{path} holds another config's run and cannot be set aside ({e.strerror}); "
                            f"use another folder") from e
    what = f"a {previous.status} run of another config ({differences(mine, theirs)})" if theirs \
        else "an unreadable results.json"
    log.warning("%s held %s: set aside as %s", folder, what, ", ".join(p.name for p in moved))
