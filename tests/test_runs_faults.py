"""Faults of the notebook runners: reports and sweeps never delete what they did not write, a bad
--out is refused before anything runs, a SIGTERM'd sweep records what finished, and the console
stays free of the kernels' harmless noise."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from fpwb import cli
from fpwb.runs import notebook, records, report
from fpwb.runs.experiments import repo_root

ROOT = repo_root()


def write_notebook(path, parameters: str, *cells: str) -> Path:
    nb = new_notebook(cells=[new_code_cell(parameters), *(new_code_cell(c) for c in cells)])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def good_notebook(path) -> Path:
    """Writes results.json and a figure-like file; fails when ``fail`` is set."""
    return write_notebook(
        path, "fail = False\nfigure = 'a.png'\nout_dir = 'unused'",
        "import os\nif fail:\n    raise RuntimeError('failing on purpose')",
        "open(os.path.join(out_dir, figure), 'w').write('figure')\n"
        "from fpwb.runs import experiments\n"
        "experiments.save_results(out_dir, {'answer': 42}, runner=os.environ.get('FPWB_RUNNER'))")


def no_execution(*args, **kwargs):
    raise AssertionError("a notebook started running")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The notebook and a report of it (one execution, shared: each test copies the report)."""
    folder = tmp_path_factory.mktemp("first")
    path = good_notebook(folder / "nb.ipynb")
    assert cli.main(["report", str(path), "--out", str(folder / "out"), "-q"]) == 0
    # the kernel knew it ran under the report runner, so output_dir kept its out_dir
    assert json.loads((folder / "out" / "nb" / "results.json").read_text())["runner"] == "report"
    return path, folder / "out"


@pytest.fixture
def nb(first_run):
    return first_run[0]


@pytest.fixture
def out(first_run, tmp_path):
    """A copy of the first run's report folder."""
    return Path(shutil.copytree(first_run[1], tmp_path / "out"))


# --- report: never delete what the runner did not write --------------------------------------

def test_rerun_of_a_reports_own_executed_notebook_is_refused_and_keeps_it(out, monkeypatch, capsys):
    monkeypatch.setattr(notebook, "execute", no_execution)
    executed = out / "nb" / "nb.ipynb"
    before = executed.read_bytes()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", str(executed), "--out", str(out), "-q"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{executed} lies inside {out / 'nb'}, the folder its run would replace" in err
    assert executed.read_bytes() == before


def test_a_users_folder_with_a_notebooks_name_is_left_alone(nb, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    (out / "nb").mkdir(parents=True)
    (out / "nb" / "thesis.tex").write_text("mine")
    monkeypatch.setattr(notebook, "execute", no_execution)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", str(nb), "--out", str(out), "-q"])
    assert exit_.value.code == 2
    assert "was not written by fpwb (no run.json)" in capsys.readouterr().err
    assert records.files_of(out / "nb") == ["thesis.tex"]


def test_failed_rerun_keeps_the_previous_run_and_the_users_files(nb, out, capsys):
    (out / "nb" / "notes.txt").write_text("mine")
    good = {p: (out / "nb" / p).read_bytes() for p in records.files_of(out / "nb")}
    assert cli.main(["report", str(nb), "-p", "fail", "True", "--out", str(out), "-q"]) == 1
    assert {p: (out / "nb" / p).read_bytes() for p in records.files_of(out / "nb")} == good
    failed = out / records.FAILED_DIR / "nb"
    assert json.loads((failed / "run.json").read_text())["status"] == "failed"
    err = capsys.readouterr().err
    assert f"partly executed notebook kept at {failed / 'nb.ipynb'}" in err
    assert f"the previous good run is kept in {out / 'nb'}" in err
    assert "<td class='ok'>ok" in (out / "index.html").read_text()
    assert not (out / records.STAGING_DIR).exists()


def test_successful_rerun_replaces_only_the_runners_files(nb, out):
    (out / "nb" / "notes.txt").write_text("mine")
    (out / "nb" / "sub").mkdir()
    (out / "nb" / "sub" / "data.csv").write_text("1,2")
    assert cli.main(["report", str(nb), "-p", "figure", "b.png", "--out", str(out), "-q"]) == 0
    files = records.files_of(out / "nb")
    assert "a.png" not in files and "b.png" in files  # the old run's figure went with it
    assert (out / "nb" / "notes.txt").read_text() == "mine"
    assert (out / "nb" / "sub" / "data.csv").read_text() == "1,2"
    record = json.loads((out / "nb" / "run.json").read_text())
    assert "notes.txt" not in record["files"] and "b.png" in record["files"]


def write_run(folder, files: dict):
    """A run folder by hand: ``files`` (name -> text) and the record listing them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    records.write_json(folder / "run.json", records.run_record(
        name="nb", notebook="nb.ipynb", parameters={}, status="ok", error=None,
        started=records.now(), finished=records.now(), wall_time=1.0, files=list(files)))
    return folder


def test_a_user_file_the_new_run_also_writes_is_kept_beside_it(tmp_path):
    final = write_run(tmp_path / "nb", {"a.png": "old"})
    (final / "mine.txt").write_text("the user's")
    staging = write_run(records.staging_folder(final), {"mine.txt": "new run's"})
    assert records.publish(staging, final) == final
    assert records.files_of(final) == ["mine.txt", "run.json"]
    assert (final / "mine.txt").read_text() == "new run's"
    (kept,) = tmp_path.glob("nb.kept-*")
    assert records.files_of(kept) == ["mine.txt"] and (kept / "mine.txt").read_text() == "the user's"
    assert not (tmp_path / records.STAGING_DIR).exists()


def test_an_interrupted_run_leaves_the_previous_run_as_it_was(nb, out, monkeypatch):
    before = {p: (out / "nb" / p).read_bytes() for p in records.files_of(out / "nb")}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(notebook, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["report", str(nb), "--out", str(out), "-q"])
    assert {p: (out / "nb" / p).read_bytes() for p in records.files_of(out / "nb")} == before
    assert not (out / records.STAGING_DIR).exists()


# --- report: an --out that cannot be written -------------------------------------------------

def test_out_under_a_file_exits_2_with_one_line_before_anything_runs(nb, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(notebook, "execute", no_execution)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", str(nb), "--out", str(tmp_path / "file" / "report"), "-q"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write into {tmp_path / 'file' / 'report'}" in err
    assert "Traceback" not in err


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody here can write into: mode 0555, and immutable for root (who ignores modes)."""
    place = tmp_path / "read-only"
    place.mkdir()
    place.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(place)],
                                                         capture_output=True).returncode:
            pytest.skip("root writes anywhere, and chattr +i (immutable folder) is not available")
    try:
        yield place
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(place)], check=True)
        place.chmod(0o755)


def test_read_only_out_exits_2_with_one_line_before_anything_runs(nb, read_only, monkeypatch, capsys):
    monkeypatch.setattr(notebook, "execute", no_execution)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", str(nb), "--out", str(read_only / "report"), "-q"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write into {read_only / 'report'}" in err
    assert not (read_only / "report").exists()
    with pytest.raises(SystemExit) as exit_:  # the folder itself, which exists
        cli.main(["report", str(nb), "--out", str(read_only), "-q"])
    assert exit_.value.code == 2 and f"cannot write into {read_only}" in capsys.readouterr().err


# --- report: the console ---------------------------------------------------------------------

def test_report_prints_its_estimate_and_no_kernel_noise(nb, out):
    seconds = json.loads((out / "nb" / "run.json").read_text())["wall_time"]
    done = subprocess.run([sys.executable, "-m", "fpwb.cli", "report", str(nb), "--out", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert (f"fpwb report: 1 notebook(s), about {seconds:.0f} s (from the previous run's times "
            f"of 1 of them)") in done.stderr
    assert "KeyboardInterrupt caught in kernel" not in done.stderr
    assert "without encryption" not in done.stderr


def test_estimate_without_records_states_its_default(nb, tmp_path):
    message = report.estimate_message([nb], tmp_path, [{"fail": False}])
    assert message == ("1 notebook(s), about 2 min (from a default of 120 s per notebook "
                       "(smoke: 15 s); no earlier run on record)")


def test_estimate_uses_records_with_the_same_smoke_setting(tmp_path):
    for name, smoke, wall in (("a", True, 3.0), ("b", False, 50.0)):
        (tmp_path / name).mkdir()
        records.write_json(tmp_path / name / "run.json", records.run_record(
            name=name, notebook=f"{name}.ipynb", parameters={"smoke": smoke}, status="ok",
            error=None, started=records.now(), finished=records.now(), wall_time=wall))
    paths = [Path("a.ipynb"), Path("b.ipynb"), Path("c.ipynb")]
    seconds, measured = report.estimate(paths, tmp_path, [{"smoke": True}] * 3)
    assert (seconds, measured) == (3.0 + 2 * report.DEFAULT_SECONDS["smoke"], 1)


# --- sweeps: SIGTERM ---------------------------------------------------------------------------

def test_sigterm_records_what_finished_marks_the_sweep_interrupted_and_releases_the_lock(tmp_path):
    probe = write_notebook(
        tmp_path / "slow.ipynb", "seed = 0\nx = 1\nout_dir = '.'",
        "import json, os, time\n"
        "for _ in range(0 if x == 1 else 300):\n    time.sleep(0.1)\n"
        "json.dump({'score': x, 'runner': os.environ.get('FPWB_RUNNER')},\n"
        "          open(os.path.join(out_dir, 'results.json'), 'w'))")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"grid": {"x": [1, 2]}}))
    out = tmp_path / "sweep"
    process = subprocess.Popen([sys.executable, "-m", "fpwb.runs.sweep", str(probe), "--grid",
                                str(grid), "--out", str(out), "--workers", "1"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while records.read_record(out / "runs" / "x=1") is None:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.2)
        time.sleep(1.0)  # x=2 is running now
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "interrupted; what finished is recorded" in err
    summary = json.loads((out / "sweep.json").read_text())
    assert (summary["status"], summary["n_ok"], summary["n_pending"]) == ("interrupted", 1, 1)
    with open(out / "results.csv", newline="") as f:
        assert [(r["run"], r["status"]) for r in csv.DictReader(f)] == [("x=1", "ok"), ("x=2", "pending")]
    assert not (out / ".lock").exists()
    assert json.loads((out / "runs" / "x=1" / "results.json").read_text())["runner"] == "sweep"
