"""The resumable job runner shared by every sweep: training runs in their own processes, a log of finished
jobs, and a pool that runs independent jobs side by side.

Three ways a sweep survives a kill, one for each kind of work:

- :func:`train_subprocess` trains ``lavid/train.py`` in a process of its own to a step count, resuming from
  the run's last checkpoint; a run that already reached the count is not started at all.
- :class:`JobLog` appends one JSON row per finished job to ``runs.jsonl``, stamped with the signature of
  what produced it (data, config, settings); a rerun skips the jobs whose row is there with the same
  signature, so a killed sweep loses only the job that was running.
- :func:`run_jobs` runs jobs one after another in this process, or ``workers`` at a time in threads (for
  jobs that wait on a subprocess) or in spawned processes (for jobs that compute), and yields each job's
  result as it finishes, so the caller can log it at once.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO / "lavid" / "train.py"


# --------------------------------------------------------------------------------------- training runs


def trained_steps(run_dir: str | os.PathLike) -> int:
    """The step of ``run_dir``'s latest complete checkpoint (0 when it has none)."""
    from lavid.training.checkpoint import STATE_FILE, latest_checkpoint

    checkpoint = latest_checkpoint(run_dir) if Path(run_dir).exists() else None
    if checkpoint is None:
        return 0
    return int(json.loads((checkpoint / STATE_FILE).read_text()).get("step", 0))


def train_subprocess(run_dir: str | os.PathLike, steps: int, overrides: list[str], *, config: str | None = None,
                     launcher: list[str] | None = None, log_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train ``lavid/train.py`` into ``run_dir`` to ``steps`` in a process of its own, resuming what a killed
    sweep left.

    Args:
        run_dir: the run's ``out_dir``. A folder that never reached its first checkpoint holds nothing worth
            keeping and is removed first.
        steps: optimizer steps the run must reach; a run already there is not started.
        overrides: ``key=value`` config overrides of this run.
        config: ``--config`` YAML (default: the training driver's own default).
        launcher: the command prefix (default this Python; e.g. ``accelerate launch ...``).
        log_path: where the process's output goes (appended); default: inherited stdout / stderr.

    Returns:
        ``{"status": "trained"}``, or ``{"status": "failed", "error": the last ``error:`` line of the log (or
        its last line), "log": path}``; a failed run never raises, so one bad run does not stop a sweep.
    """
    run_dir = Path(run_dir)
    done = trained_steps(run_dir)
    if done >= steps:
        return {"status": "trained"}
    if done == 0 and run_dir.exists():  # started but never checkpointed
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = [*(launcher if launcher is not None else [sys.executable]), str(TRAIN_SCRIPT),
               *(["--config", config] if config else []), *overrides, f"steps={steps}", f"out_dir={run_dir}",
               "progress=false"] + (["resume=true"] if done else [])
    log.info("training %s%s", run_dir.name, f" (resuming at step {done})" if done else "")
    # the caller's working directory: relative paths (data=..., --config) mean the same in the sweep and its runs
    if log_path is None:
        print("training:", shlex.join(command[1:]), flush=True)
        result = subprocess.run(command)
        output = ""
    else:
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(f"$ {shlex.join(command)}\n")
            handle.flush()
            result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
        output = Path(log_path).read_text(errors="replace")
    if result.returncode == 0 and trained_steps(run_dir) >= steps:
        return {"status": "trained"}
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    last = (errors or lines or [f"lavid/train.py exited with code {result.returncode}"])[-1][:500]
    return {"status": "failed", "error": last, **({"log": str(log_path)} if log_path else {})}


# ------------------------------------------------------------------------------------- finished jobs


class JobLog:
    """``runs.jsonl``: one JSON row per finished job, each stamped with the signature of what produced it.

    Args:
        path: the log file (created on the first :meth:`append`).
        signature: a JSON-able description of everything a row depends on (data, config, settings); rows
            with another signature are ignored (and kept in the file), so changing a setting reruns the jobs.
    """

    def __init__(self, path: str | os.PathLike, signature: Any):
        self.path = Path(path)
        self.signature = json.dumps(signature, sort_keys=True) if not isinstance(signature, str) else signature

    def rows(self) -> list[dict[str, Any]]:
        """The finished rows of this signature, in the order they finished."""
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [row for row in rows if row.get("signature") == self.signature]

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        """Stamp ``row`` with the signature and append it at once (a killed sweep keeps what finished)."""
        row["signature"] = self.signature
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        return row


# ------------------------------------------------------------------------------------------------ pool


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_jobs(fn: Callable[..., Any], jobs: Iterable[dict[str, Any]], workers: int = 1,
             kind: Literal["process", "thread"] = "process", progress: bool = True,
             desc: str = "runs") -> Iterator[Any]:
    """Run ``fn(**job)`` for every job; yield each result as it finishes.

    Args:
        fn: a module-level function (spawned processes must be able to import it).
        jobs: its keyword arguments, one dict per job.
        workers: jobs at once. 1 runs them one after another in this process, in order (``fn`` also gets
            ``progress=progress``); more runs them in a pool, results in the order they finish.
        kind: ``process``: spawned processes, each with ``cores // workers`` torch threads (for jobs that
            compute: on 2 cores two one-thread processes get through more work than one two-thread process);
            ``thread``: threads (for jobs that wait on a subprocess of their own).
        progress: a bar over the pool's jobs.
        desc: the bar's label.

    Raises:
        Whatever a job raised; on an error or Ctrl-C the queued jobs are dropped rather than waited for.
    """
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed

    jobs = list(jobs)
    if workers <= 1:
        for job in jobs:
            yield fn(**job, progress=progress) if kind == "process" else fn(**job)
        return
    if not jobs:
        return
    from tqdm.auto import tqdm

    if kind == "thread":
        pool = ThreadPoolExecutor(min(workers, len(jobs)))
    else:
        from multiprocessing import get_context

        threads = max(1, (os.cpu_count() or 1) // workers)
        # spawn, not fork: a forked child of a process whose OpenMP pool already ran can hang
        pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads,))
    with pool:
        futures = [pool.submit(fn, **job) for job in jobs]
        try:
            for future in tqdm(as_completed(futures), total=len(futures), disable=not progress, desc=desc,
                               unit="run"):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
