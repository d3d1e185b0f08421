"""fpwb.runs.sweep (and its grid, store, workers and tables modules): grids, sweep identity, and
real sweeps of a probe notebook on a LocalCluster."""
import csv
import json
import os
import shutil
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from fpwb.runs import store, sweep, workers
from fpwb.runs.experiments import repo_root
from fpwb.runs.grid import Grid, run_name
from fpwb.runs.sweep import Sweep, main, run_sweep

PROBE = Path(__file__).parent / "notebooks" / "sweep_probe.ipynb"
GRID = {"grid": {"x": [1, 2, 3, 4]}, "fixed": {"fail_at": 3, "smoke": True, "seed": 7}}


def write_grid(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def no_execution(*args, **kwargs):
    raise AssertionError("the sweep started running")


# --- grids -------------------------------------------------------------------------------------

def test_grid_expands_first_parameter_slowest():
    grid = Grid.from_dict({"grid": {"a": [1, 2], "b": ["u", "v", "w"]}, "fixed": {"seed": 0}})
    assert len(grid) == 6
    assert grid.combinations()[:4] == [{"a": 1, "b": "u"}, {"a": 1, "b": "v"}, {"a": 1, "b": "w"},
                                       {"a": 2, "b": "u"}]
    assert repr(grid) == "Grid(a[2] x b[3] = 6 runs, fixed={'seed': 0})"


def test_run_names_are_readable_and_unique():
    assert run_name({"w_boost": 0.05, "t_decay": 0.001}) == "w_boost=0.05__t_decay=0.001"
    assert run_name({"smoke": True, "data": None}) == "smoke=true__data=null"
    odd = run_name({"path": "a/b"})
    assert odd.startswith("path=a-b-") and odd != run_name({"path": "a-b"})
    assert len(run_name({"x": "y" * 500})) < 140


def test_grid_file_must_exist_and_parse(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Grid.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("grid: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        Grid.load(tmp_path / "bad.yaml")


def test_grid_file_reads_exponents_as_floats(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("grid:\n  t_decay: [1e-3, 2.5E-4, 0.1]\n  n: [1, 2]\nfixed:\n  tag: 1e-3x\n")
    grid = Grid.load(path)
    assert grid.grid == {"t_decay": [0.001, 0.00025, 0.1], "n": [1, 2]}
    assert grid.fixed == {"tag": "1e-3x"}


@pytest.mark.parametrize("data, message", [
    ({"fixed": {"a": 1}}, "non-empty 'grid'"),
    ({"grid": {"a": 1}}, "grid.a must be a non-empty list"),
    ({"grid": {"a": []}}, "grid.a must be a non-empty list"),
    ({"grid": {"a": [1, 1]}}, "repeats a value"),
    ({"grid": {"a": [1, "1"]}}, "repeats a value"),
    ({"grid": {"a": [1]}, "fixed": {"a": 2}}, "both grid and fixed"),
    ({"grid": {"out_dir": ["x"]}}, "out_dir is set by the sweep"),
    ({"grid": {"a": [1]}, "grids": {}}, "unknown keys"),
])
def test_grid_rejects_malformed_files(data, message):
    with pytest.raises(ValueError, match=message):
        Grid.from_dict(data)


# --- validation before anything runs -------------------------------------------------------------

def test_unknown_parameter_is_rejected_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "_execute", no_execution)
    grid = write_grid(tmp_path / "g.yaml", {"grid": {"x": [1, 2], "lerning_rate": [0.1]}})
    with pytest.raises(ValueError, match="no parameter 'lerning_rate'"):
        run_sweep(PROBE, grid, tmp_path / "out")
    assert main([str(PROBE), "--grid", str(grid), "--out", str(tmp_path / "out")]) == 2
    assert "lerning_rate" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_notebook_needs_out_dir_and_a_pinned_seed(tmp_path):
    def notebook(parameters: str) -> Path:
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                "display_name": "Python 3"}})
        nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]})]
        path = tmp_path / "nb.ipynb"
        nbformat.write(nb, path)
        return path

    with pytest.raises(ValueError, match="must declare an out_dir"):
        Sweep(notebook("seed = 0\nx = 1"), {"grid": {"x": [1]}})
    with pytest.raises(ValueError, match="must declare a seed"):
        Sweep(notebook("x = 1\nout_dir = '.'"), {"grid": {"x": [1]}})
    with pytest.raises(ValueError, match="set seed in the grid"):
        Sweep(notebook("import time\nseed = int(time.time())\nx = 1\nout_dir = '.'"), {"grid": {"x": [1]}})
    assert Sweep(notebook("seed = int(1.5)\nx = 1\nout_dir = '.'"),
                 {"grid": {"seed": [0, 1]}}).unpinned == {}


def test_workers_and_scheduler_are_checked(tmp_path):
    with pytest.raises(ValueError, match="workers must be a positive int"):
        run_sweep(PROBE, GRID, tmp_path / "out", workers=0)
    with pytest.raises(ValueError, match="scheduler's cluster has its own workers"):
        run_sweep(PROBE, GRID, tmp_path / "out", scheduler="tcp://127.0.0.1:8786", workers=2)


# --- a real sweep on a LocalCluster, then a second invocation --------------------------------------

@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Run the probe grid (4 runs, x=3 fails) on 2 workers, then run the same command again."""
    tmp = tmp_path_factory.mktemp("sweep")
    grid, out = write_grid(tmp / "probe.yaml", GRID), tmp / "report" / "sweeps" / "probe"
    first = run_sweep(PROBE, grid, out, workers=2, progress=False)
    records = {p.parent.name: json.loads(p.read_text()) for p in out.glob("runs/*/run.json")}
    code = main([str(PROBE), "--grid", str(grid), "--out", str(out), "--workers", "1"])
    again = {p.parent.name: json.loads(p.read_text()) for p in out.glob("runs/*/run.json")}
    return {"grid": grid, "out": out, "first": first, "records": records, "code": code,
            "again": again, "summary": json.loads((out / "sweep.json").read_text())}


def test_failed_run_is_recorded_and_the_others_complete(sweeps):
    first, out = sweeps["first"], sweeps["out"]
    assert first.status == "failed" and not first.ok
    assert (first.executed, first.skipped) == (4, 0)
    assert [r["run"] for r in first.failed] == ["x=3"]
    failed = sweeps["records"]["x=3"]
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "ValueError"
    assert "failing on purpose at x=3" in failed["error"]["message"]
    assert (out / "runs" / "x=3" / PROBE.name).is_file()  # the failed notebook is kept
    executed = nbformat.read(out / "runs" / "x=1" / PROBE.name, as_version=4)
    (injected,) = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert f'out_dir = "{(out / "runs" / "x=1").resolve()}"' in injected.source
    for name in ("x=1", "x=2", "x=4"):
        assert sweeps["records"][name]["status"] == "ok"
        results = json.loads((out / "runs" / name / "results.json").read_text())
        assert results["cwd"] == str(repo_root())  # notebooks run from the repo root


def test_table_figure_and_index_entry(sweeps):
    out = sweeps["out"]
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["status"]) for r in rows] == [
        ("x=1", "ok"), ("x=2", "ok"), ("x=3", "failed"), ("x=4", "ok")]
    assert rows[1]["x_squared"] == "4" and rows[1]["seed"] == "7"
    assert rows[2]["score"] == "" and "failing on purpose" in rows[2]["error"]
    assert (out / "summary.png").stat().st_size > 1000
    summary = sweeps["summary"]
    assert summary["kind"] == "fpwb-sweep"
    assert (summary["n_runs"], summary["n_ok"], summary["n_failed"], summary["n_pending"]) == (4, 3, 1, 0)
    assert summary["metric"] == "score" and summary["table"] == "results.csv"
    assert summary["failed"][0]["notebook"] == f"runs/x=3/{PROBE.name}"
    assert summary["cluster"] == "LocalCluster, 1 worker"
    assert not (out / ".lock").exists()


def test_second_invocation_skips_completed_runs(sweeps):
    assert sweeps["code"] == 1  # x=3 still fails
    before, after = sweeps["records"], sweeps["again"]
    for name in ("x=1", "x=2", "x=4"):
        assert after[name] == before[name]  # untouched
    assert after["x=3"]["finished"] >= before["x=3"]["finished"]
    assert after["x=3"]["status"] == "failed"
    assert sweeps["summary"]["status"] == "failed"


def test_the_command_lists_the_sweep_in_the_report_index(sweeps):
    page = (sweeps["out"].parents[1] / "index.html").read_text()
    assert "sweep_probe--probe" in page and "sweeps/probe/results.csv" in page


def test_changed_grid_or_notebook_is_refused(sweeps, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "_execute", no_execution)
    out = sweeps["out"]
    changed = write_grid(tmp_path / "probe.yaml", {**GRID, "fixed": {**GRID["fixed"], "seed": 8}})
    with pytest.raises(ValueError, match="another grid.*--force"):
        run_sweep(PROBE, changed, out)
    nb = nbformat.read(PROBE, as_version=4)
    nb.cells[2].source += "\nprint('changed')"
    edited = tmp_path / PROBE.name
    nbformat.write(nb, edited)
    with pytest.raises(ValueError, match="another notebook code"):
        run_sweep(edited, sweeps["grid"], out)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    store.prepare(Sweep(edited, sweeps["grid"], copy), force=True)
    assert not (copy / "runs").exists() and not (copy / "results.csv").exists()


def test_busy_folder_is_refused(sweeps, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sweeps["out"], copy)
    (copy / ".lock").write_text(f"{os.getpid()} {os.uname().nodename}")
    with pytest.raises(RuntimeError, match="another fpwb sweep"):
        run_sweep(PROBE, sweeps["grid"], copy)


def test_run_is_reproducible_from_its_stored_parameters(sweeps, tmp_path):
    # What `papermill notebook.ipynb OUT.ipynb -f parameters.yaml -p out_dir DIR --cwd REPO` does.
    out, run = sweeps["out"], sweeps["out"] / "runs" / "x=2"
    parameters = yaml.safe_load((run / "parameters.yaml").read_text())
    papermill.execute_notebook(str(out / "notebook.ipynb"), str(tmp_path / "rerun.ipynb"),
                               parameters={**parameters, "out_dir": str(tmp_path)},
                               cwd=str(repo_root()), progress_bar=False)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(
        (run / "results.json").read_text())


def test_example_grid_fits_the_hyperparameter_notebook():
    root = repo_root()
    grid = Grid.load(root / "examples" / "grid_hyperparameters.yaml")
    assert list(grid.grid) == ["w_boost", "t_decay"] and len(grid) == 16
    notebook = root / "notebooks" / "05_hyperparameters.ipynb"
    if notebook.is_file():  # once the notebook exists, it must declare every grid parameter
        assert len(Sweep(notebook, grid).runs) == 16


def test_worker_without_the_sweep_folder_sends_files_back(tmp_path):
    folder = tmp_path / "elsewhere" / "runs" / "x=5"
    folder.mkdir(parents=True)
    report = workers.execute_run(PROBE.read_text(), PROBE.name, {"x": 5, "seed": 1}, str(folder),
                               "not-this-sweep")
    assert report["error"] is None
    assert sorted(report["files"]) == sorted([PROBE.name, "results.json"])
    assert json.loads(report["files"]["results.json"])["x_squared"] == 25
    assert not any(folder.iterdir())  # nothing written where this worker cannot see the sweep



def test_each_run_is_a_tensorboard_run_with_its_parameters_and_results(sweeps):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    def read(name):
        events = EventAccumulator(str(sweeps["out"] / "runs" / name))
        events.Reload()
        data = {tag: HParamsPluginData.FromString(content)
                for tag, content in events.PluginTagToContent("hparams").items()}
        scalars = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
        return data, scalars

    data, scalars = read("x=2")
    hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
               for k, v in data["_hparams_/session_start_info"].session_start_info.hparams.items()}
    assert hparams == {"seed": 7, "x": 2, "fail_at": 3, "smoke": True, "device": "cpu"}
    (x,) = [h for h in data["_hparams_/experiment"].experiment.hparam_infos if h.name == "x"]
    assert [v.number_value for v in x.domain_discrete.values] == [1, 2, 3, 4]
    results = json.loads((sweeps["out"] / "runs" / "x=2" / "results.json").read_text())
    assert scalars["results/score"] == [pytest.approx(results["score"])]
    assert scalars["results/x_squared"] == [4] and scalars["run/ok"] == [1]
    record = json.loads((sweeps["out"] / "runs" / "x=2" / "run.json").read_text())
    assert any(f.startswith("events.out.tfevents.") for f in record["files"])
    _, scalars = read("x=3")  # the failed run is in the view too, without results
    assert scalars["run/ok"] == [0] and "results/score" not in scalars
