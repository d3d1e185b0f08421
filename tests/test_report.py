"""fpwb report on tiny notebooks: parameters, failures, the index, the CLI and the notebook helpers."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from fpwb import cli

from fpwb.runs import experiments, report

ROOT = experiments.repo_root()


def write_notebook(path, parameters: str, *cells: str):
    nb = new_notebook(cells=[new_code_cell(parameters), *(new_code_cell(c) for c in cells)])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notebooks")
    good = write_notebook(
        folder / "good.ipynb", "x = 1\nsmoke = False\nrate = 0.5\nlabel = 'a'\nout_dir = 'unused'",
        "import os\nfrom fpwb.runs import experiments\nprint('x is', x)",
        "experiments.save_results(out_dir, {'x squared': x * x, 'cwd': os.getcwd()}, doubled=2 * x)")
    bad = write_notebook(folder / "bad.ipynb", "out_dir = 'unused'",
                         "before = 'ran'\nprint(before)", "total = 1 / 0", "print('never')")
    return good, bad


@pytest.fixture(scope="module")
def ran(notebooks, tmp_path_factory):
    """good (x=3), then bad, into one report folder, through the command line."""
    good, bad = notebooks
    out = tmp_path_factory.mktemp("report")
    codes = [cli.main(["report", str(good), "-p", "x", "3", "--out", str(out), "-q"]),
             cli.main(["report", str(bad), "--out", str(out), "-q"])]
    return out, codes


def test_good_notebook_runs_from_the_repo_root_with_its_parameters(ran):
    out, codes = ran
    assert codes[0] == 0
    results = json.loads((out / "good" / "results.json").read_text())
    assert results["headline"] == {"x squared": 9, "cwd": str(ROOT)}
    assert results["doubled"] == 6
    run = json.loads((out / "good" / "run.json").read_text())
    assert run["status"] == "ok" and run["parameters"]["x"] == 3
    assert run["parameters"]["out_dir"] == str(out / "good")
    assert (out / "good" / "good.html").is_file()
    executed = nbformat.read(out / "good" / "good.ipynb", as_version=4)
    (injected,) = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert f'out_dir = "{out / "good"}"' in injected.source  # where the run is, not where it ran
    assert not (out / ".fpwb-staging").exists()


def test_failing_notebook_exits_non_zero_names_cell_and_error_and_keeps_the_notebook(ran, capsys):
    out, codes = ran
    assert codes[1] == 1
    run = report.load_run(out / "bad")
    assert run.status == "failed"
    # In [4]: after the parameters cell, papermill's injected-parameters cell and `before = ...`
    assert "bad" in run.error and "In [4]" in run.error and "total = 1 / 0" in run.error
    assert "ZeroDivisionError" in run.error
    executed = nbformat.read(out / "bad" / "bad.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any(o.get("text") == "ran\n" for o in outputs)  # cells before the failure ran
    assert not any(o.get("text") == "never\n" for o in outputs)  # cells after it did not
    assert (out / "bad" / "bad.html").is_file()


def test_failure_message_reaches_stderr(notebooks, tmp_path, capsys):
    _, bad = notebooks
    assert cli.main(["report", str(bad), "--out", str(tmp_path), "-q"]) == 1
    err = capsys.readouterr().err
    assert "bad failed in cell In [4]" in err and "ZeroDivisionError" in err
    assert str(tmp_path / "bad" / "bad.ipynb") in err


def test_index_lists_every_run_with_status_parameters_and_headline(ran):
    out, _ = ran
    page = (out / "index.html").read_text()
    assert page.count("<tr id=") == 2  # the second run kept the first one's row
    assert "<td class='ok'>ok" in page and "<td class='failed'>failed" in page
    assert "x squared" in page and "<td>9</td>" in page
    assert "href='good/good.html'" in page and "href='bad/bad.ipynb'" in page
    assert "ZeroDivisionError" in page


def test_unknown_parameter_is_an_error_before_anything_runs(notebooks, tmp_path, capsys):
    good, _ = notebooks
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", str(good), "-p", "nope", "1", "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "good.ipynb does not declare parameter(s) nope" in err and "x, smoke, rate, label, out_dir" in err
    assert not (tmp_path / "r").exists()


def test_out_dir_belongs_to_the_runner(notebooks):
    good, _ = notebooks
    with pytest.raises(ValueError, match="out_dir is set by the report runner"):
        report.resolve_parameters(good, {"out_dir": "elsewhere"})


def test_command_line_values_take_the_type_of_the_default(notebooks):
    good, _ = notebooks
    resolved = report.resolve_parameters(good, {"x": "7", "smoke": "True", "rate": "1e-3", "label": "7"})
    assert resolved == {"x": 7, "smoke": True, "rate": 0.001, "label": "7", "out_dir": "unused"}
    assert report.resolve_parameters(good, {"smoke": True})["smoke"] is True
    with pytest.raises(ValueError, match="parameter x of good expects a int"):
        report.resolve_parameters(good, {"x": "seven"})
    with pytest.raises(ValueError, match="parameter smoke of good expects a bool"):
        report.resolve_parameters(good, {"smoke": "maybe"})


def test_notebook_without_out_dir_is_refused(tmp_path):
    plain = write_notebook(tmp_path / "plain.ipynb", "seed = 0", "print(seed)")
    with pytest.raises(ValueError, match="declares no 'out_dir' parameter"):
        report.resolve_parameters(plain, {})


def test_notebooks_are_found_by_name_prefix_or_path(notebooks):
    assert report.find_notebooks(["00"]) == [ROOT / "notebooks" / "00_quickstart.ipynb"]
    assert report.find_notebooks(["00_quickstart.ipynb"]) == report.find_notebooks(["00_quickstart"])
    assert report.find_notebooks([str(notebooks[0])]) == [notebooks[0]]
    assert report.find_notebooks() == sorted((ROOT / "notebooks").glob("*.ipynb"))
    with pytest.raises(ValueError, match="no notebook 'nope'; known notebooks: 00_quickstart"):
        report.find_notebooks(["nope"])
    with pytest.raises(ValueError, match="ambiguous"):
        report.find_notebooks(["0"])


def test_hide_code_keeps_outputs_only(ran):
    out, _ = ran
    page = report.render_html(out / "good" / "good.ipynb", hide_code=True).read_text()
    assert "x is 3" in page and 'class="jp-InputArea' not in page
    page = report.render_html(out / "good" / "good.ipynb").read_text()
    assert 'class="jp-InputArea' in page and "<title>good</title>" in page


def test_index_marks_only_a_complete_sweep_ok(tmp_path):
    for name, status, pending in (("done", "complete", 0), ("cut", "interrupted", 2)):
        (tmp_path / "sweeps" / name).mkdir(parents=True)
        (tmp_path / "sweeps" / name / "sweep.json").write_text(json.dumps(
            {"name": name, "status": status, "n_runs": 4, "n_ok": 4 - pending, "n_failed": 0,
             "n_pending": pending, "table": "results.csv", "grid": {"x": [1, 2]}, "fixed": {},
             "metric": None, "figure": None, "wall_time_s": 1.0}))
    page = report.write_index(tmp_path).read_text()
    assert "<td class='ok'>complete: 4 of 4 runs ok</td>" in page
    assert "<td class='failed'>interrupted: 2 of 4 runs ok</td>" in page


def test_key_figures_are_copied_by_notebook_name(tmp_path):
    folder = tmp_path / "report" / "00_demo"
    folder.mkdir(parents=True)
    (folder / "fig.png").write_bytes(b"png")
    experiments.save_results(folder, {"a": 1}, key_figure="fig.png")
    assert cli.main(["figures", "--report", str(tmp_path / "report"), "--dest", str(tmp_path / "docs")]) == 0
    assert (tmp_path / "docs" / "00_demo.png").read_bytes() == b"png"
    with pytest.raises(ValueError, match="no key figures"):
        report.copy_key_figures(tmp_path / "docs", tmp_path / "elsewhere")


def test_save_results_checks_headline_and_key_figure(tmp_path):
    with pytest.raises(ValueError, match="headline values must be single numbers"):
        experiments.save_results(tmp_path, {"a": [1, 2]})
    with pytest.raises(ValueError, match="key_figure 'missing.png' is not a file"):
        experiments.save_results(tmp_path, {"a": 1}, key_figure="missing.png")
    path = experiments.save_results(tmp_path, {"a": float("nan")}, grid=[[1.5]])
    assert json.loads(path.read_text()) == {"headline": {"a": None}, "key_figure": None, "grid": [[1.5]]}


def test_workdir_moves_to_the_repo_root_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert experiments.workdir() == ROOT and os.getcwd() == str(ROOT)
    with pytest.raises(ValueError, match="no pyproject.toml found"):
        experiments.repo_root(tmp_path)


def test_interactive_runs_write_beside_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(experiments, "repo_root", lambda start=None: tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(experiments.RUNNER_ENV, raising=False)
    assert experiments.output_dir("reports/05_demo") == tmp_path / "reports" / "interactive" / "05_demo"
    assert "interactive run: writing into" in capsys.readouterr().out
    experiments.save_results("reports/05_demo", {"a": 1})
    assert (tmp_path / "reports" / "interactive" / "05_demo" / "results.json").is_file()
    assert not (tmp_path / "reports" / "05_demo").exists()
    assert experiments.output_dir("elsewhere/05") == Path("elsewhere/05")  # not the report's: kept
    inside = tmp_path / "reports" / "interactive" / "x"
    assert experiments.output_dir(inside) == inside
    monkeypatch.setenv(experiments.RUNNER_ENV, "report")  # what fpwb's runners set
    assert experiments.output_dir("reports/05_demo") == Path("reports/05_demo")
    assert (tmp_path / "reports" / "05_demo").is_dir()


def test_resolve_device():
    assert str(experiments.resolve_device("cpu")) == "cpu"
    assert experiments.resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device must be"):
        experiments.resolve_device("gpu please")


@pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
                    reason="no Chromium (apt-get install -y chromium)")
def test_browser_check_catches_a_missing_figure(tmp_path):
    (tmp_path / "a").mkdir()
    png = ROOT / "docs" / "figures" / "00_quickstart.png"
    shutil.copyfile(png, tmp_path / "a" / "ok.png")
    (tmp_path / "index.html").write_text(
        "<html><head><title>fpwb report</title></head><body><table class='runs'><tbody><tr><td>"
        "<a href='a/a.html'>html</a></td></tr></tbody></table></body></html>")
    (tmp_path / "a" / "a.html").write_text(
        "<html><head><title>a</title></head><body><img src='ok.png'><img src='gone.png'></body></html>")
    check = [sys.executable, str(ROOT / "scripts" / "check_report_browser.py"), str(tmp_path)]
    done = subprocess.run(check, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "a/a.html: 'a', 1/2 images loaded" in done.stdout
    assert "FAIL a/a.html: 1 of 2 image(s) did not load" in done.stderr and "gone.png" in done.stderr
    (tmp_path / "a" / "gone.png").write_bytes(png.read_bytes())
    done = subprocess.run(check, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "report renders" in done.stdout
