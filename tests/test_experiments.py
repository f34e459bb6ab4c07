"""The experiment layer: the job runner (finished-job log, pool, training subprocesses), the one results
writer and the YAML presets of every sweep."""

from __future__ import annotations

import csv
import json
import os

import pytest

from lavid.core.config import ConfigError
from lavid.experiments.presets import PRESETS, load_preset, preset_names
from lavid.experiments.results import cell, markdown_table, write_results
from lavid.experiments.runner import JobLog, run_jobs, train_subprocess, trained_steps


def square(x: int, progress: bool = False) -> dict:
    """A job for the pool (module level, so spawned processes can import it)."""
    if x < 0:
        raise ValueError(f"negative {x}")
    return {"x": x, "y": x * x, "pid": os.getpid()}


def test_job_log_keeps_rows_of_its_own_signature(tmp_path):
    path = tmp_path / "runs.jsonl"
    log = JobLog(path, {"data": "a", "steps": 10})
    assert log.rows() == []
    log.append({"method": "bc", "seed": 0})
    log.append({"method": "bc", "seed": 1})
    JobLog(path, {"data": "a", "steps": 11}).append({"method": "bc", "seed": 0})  # other settings
    assert [r["seed"] for r in JobLog(path, {"steps": 10, "data": "a"}).rows()] == [0, 1]  # key order is irrelevant
    assert [r["seed"] for r in JobLog(path, {"data": "a", "steps": 11}).rows()] == [0]
    assert len(path.read_text().splitlines()) == 3  # rows of other signatures stay in the file


def test_run_jobs_in_order_in_threads_and_in_processes():
    jobs = [{"x": x} for x in range(4)]
    serial = list(run_jobs(square, jobs, workers=1))
    assert [r["y"] for r in serial] == [0, 1, 4, 9] and {r["pid"] for r in serial} == {os.getpid()}
    threaded = list(run_jobs(square, jobs, workers=2, kind="thread", progress=False))
    assert sorted(r["y"] for r in threaded) == [0, 1, 4, 9]
    spawned = list(run_jobs(square, jobs, workers=2, progress=False))
    assert sorted(r["y"] for r in spawned) == [0, 1, 4, 9] and os.getpid() not in {r["pid"] for r in spawned}
    with pytest.raises(ValueError, match="negative -1"):  # a job's error reaches the caller
        list(run_jobs(square, [{"x": 1}, {"x": -1}], workers=2, kind="thread", progress=False))
    assert list(run_jobs(square, [], workers=2)) == []


def test_a_failed_training_run_is_reported_not_raised(tmp_path):
    run = tmp_path / "runs" / "bad"
    result = train_subprocess(run, 5, ["model.bogus=1"], log_path=tmp_path / "bad.log")
    assert result["status"] == "failed" and "bogus" in result["error"] and result["log"].endswith("bad.log")
    assert trained_steps(run) == 0 and "$ " in (tmp_path / "bad.log").read_text()  # the command is logged


def test_results_are_written_as_markdown_csv_and_json(tmp_path):
    rows = [{"method": "a", "score": 1.5}, {"method": "b", "score": float("nan"), "extra": "x|y"}]
    table = markdown_table(["method", "score"], [[r["method"], cell(r["score"], "{:.2f}")] for r in rows])
    assert table.splitlines() == ["| method | score |", "|---|---|", "| a | 1.50 |", "| b | – |"]
    assert markdown_table(["a"], [["x|y"]]).splitlines()[-1] == "| x/y |"  # a cell cannot break the table
    paths = write_results(tmp_path / "out", "# title\n\n" + table, rows, payload={"rows": rows}, columns=["score"])
    assert paths["md"].read_text().startswith("# title") and paths["md"].read_text().endswith("|\n")
    with open(paths["csv"], newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == ["score", "method", "extra"] and read[1]["extra"] == "x|y"
    assert json.loads(paths["json"].read_text())["rows"][0]["method"] == "a"
    assert not list((tmp_path / "out").glob("*.tmp"))  # written atomically, nothing left behind


def test_every_shipped_preset_loads_and_bad_ones_name_the_key(tmp_path):
    from lavid.experiments.ablation import Budget
    from lavid.experiments.offline_rl import OfflineRLBudget
    from lavid.experiments.planning import PlanPreset

    classes = {"ablate": Budget, "offline_rl": OfflineRLBudget, "plan": PlanPreset}
    assert sorted(p.name for p in PRESETS.iterdir()) == sorted(classes)
    for sweep, cls in classes.items():
        assert preset_names(sweep), sweep
        for name in preset_names(sweep):
            assert isinstance(load_preset(cls, sweep, name), cls)
    assert load_preset(OfflineRLBudget, "offline_rl", "smoke", ["seeds=7"]).seeds == 7
    smoke = load_preset(Budget, "ablate", "smoke")
    assert smoke.steps == 400 and smoke.values["fsq"] == [[8, 5], [8, 5, 5, 5]]
    with pytest.raises(ConfigError, match="no offline_rl preset 'huge'"):
        load_preset(OfflineRLBudget, "offline_rl", "huge")
    with pytest.raises(ConfigError, match="unknown config key 'sedes'"):
        load_preset(OfflineRLBudget, "offline_rl", "smoke", ["sedes=3"])
    own = tmp_path / "mine.yaml"
    own.write_text("samples: 0\n")
    with pytest.raises(ConfigError, match="mine.yaml: samples: must be >= 1"):
        load_preset(PlanPreset, "plan", str(own))
