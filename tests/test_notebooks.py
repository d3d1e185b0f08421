"""Every notebook in notebooks/ (the six core ones must be there): its conventions, a papermill run
with smoke=True through the report runner, nbval over the executed copies, and the rendered report
in headless Chromium.

nbval design: the committed notebooks carry no outputs, and their defaults are the full (minutes
long) experiments. So nbval runs in lax mode over the executed smoke copies papermill wrote (they
hold the injected ``smoke = True`` cell and the outputs of that run): every cell must run again
without error, and the cells marked ``# NBVAL_CHECK_OUTPUT`` (the seeded result numbers) must print
exactly what the papermill run printed.

Time: every notebook runs twice (papermill, then nbval), so each smoke run is kept to a few seconds
of compute; the kernels use one thread (``KERNEL_ENV``) and nbval runs in ``NBVAL_JOBS`` processes.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from fpwb.runs import experiments, report

ROOT = experiments.repo_root()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NAMES = [p.stem for p in NOTEBOOKS]
EXPECTED = ["00_quickstart", "01_simple_patterns_linear", "02_simple_patterns_conv2d",
            "03_probe_benchmark", "04_explorer", "05_hyperparameters"]
REQUIRED = {"seed", "device", "smoke", "out_dir"}
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
#: The kernels' environment, the same for papermill and nbval: one OpenMP thread. The smoke runs
#: are tiny, so a second torch thread only costs (several times over on a busy machine).
KERNEL_ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
#: nbval runs the executed notebooks in this many pytest processes at once (one kernel each).
NBVAL_JOBS = 2
#: An IPython start-up file for the smoke runs' kernels: it wraps
#: ``fpwb.runs.experiments.save_figure`` so that every figure a notebook saves is checked
#: (``fpwb.viz.plots.figure_problems``: a title, labelled axes and colour bars) from the
#: matplotlib objects themselves, one JSON line per figure in the file FPWB_FIGURE_LOG names.
FIGURE_CHECK = """
import json, os
from fpwb.runs import experiments
from fpwb.viz import plots

_save_figure = experiments.save_figure


def _checked_save_figure(fig, out_dir, name):
    with open(os.environ["FPWB_FIGURE_LOG"], "a") as log:
        # out_dir is the run's staging folder, <notebook>-<hex> (fpwb.runs.records.staging_folder)
        notebook = os.path.basename(os.path.normpath(str(out_dir))).split("-")[0]
        log.write(json.dumps({"notebook": notebook, "figure": name,
                              "problems": plots.figure_problems(fig)}) + "\\n")
    return _save_figure(fig, out_dir, name)


experiments.save_figure = _checked_save_figure
"""


def test_the_core_notebooks_are_there():
    assert set(EXPECTED) <= set(NAMES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    params = papermill.inspect_notebook(str(path))
    assert REQUIRED <= set(params), f"missing parameters {REQUIRED - set(params)}"
    assert params["out_dir"]["default"] == repr(f"reports/{path.stem}").replace("'", '"')
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "experiments.workdir()" in first_code.source, "the first code cell fixes the working directory"
    assert any(CHECK_MARKER in c.source for c in nb.cells if c.cell_type == "code")
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit without outputs"


def test_data_set_notebooks_declare_dataset():
    for name in ("03_probe_benchmark", "04_explorer", "05_hyperparameters"):
        assert "dataset" in papermill.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
    params = papermill.inspect_notebook(str(ROOT / "notebooks" / "05_hyperparameters.ipynb"))
    assert {"w_boost", "t_decay", "n_neurons"} <= set(params)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke_report")
    ipython = tmp_path_factory.mktemp("ipython")
    (ipython / "profile_default" / "startup").mkdir(parents=True)
    (ipython / "profile_default" / "startup" / "00_check_figures.py").write_text(FIGURE_CHECK)
    with pytest.MonkeyPatch.context() as env:
        for name, value in KERNEL_ENV.items():
            env.setenv(name, value)
        env.setenv("IPYTHONDIR", str(ipython))
        env.setenv("FPWB_FIGURE_LOG", str(out / "figures.jsonl"))
        runs = report.run_report(parameters={"smoke": True}, out_dir=out, progress=False)
    return out, {run.name: run for run in runs}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_smoke_mode(smoke_report, name):
    out, runs = smoke_report
    run = runs[name]
    assert run.status == "ok", run.error
    assert run.parameters["smoke"] is True
    results = json.loads((out / name / "results.json").read_text())
    assert results["headline"], "headline numbers for the index"
    assert (out / name / results["key_figure"]).stat().st_size > 5000
    page = (out / name / f"{name}.html").read_text()
    assert "data:image/png;base64" in page, "figures inline in the HTML page"


def test_smoke_results_make_sense(smoke_report):
    out, _ = smoke_report
    results = {name: json.loads((out / name / "results.json").read_text())["headline"] for name in EXPECTED}
    assert results["00_quickstart"]["neurons fired"] > 0
    quickstart = json.loads((out / "00_quickstart" / "results.json").read_text())
    # plots.coverage on the trained layer assigns every neuron that fired to exactly one pattern
    assert sum(quickstart["neurons_per_pattern"].values()) == results["00_quickstart"]["neurons fired"]
    assert all(0.0 <= c <= 1.0 + 1e-6 for c in quickstart["best_cosine"].values())
    assert 0 < results["03_probe_benchmark"]["raw pixels"] <= 1
    assert 0 <= results["05_hyperparameters"]["accuracy"] <= 1
    assert results["04_explorer"]["samples seen"] > 0


def test_every_saved_figure_has_a_title_and_labelled_axes(smoke_report):
    out, _ = smoke_report
    checked = [json.loads(line) for line in (out / "figures.jsonl").read_text().splitlines()]
    saved = {(p.parent.name, p.stem) for p in out.glob("*/*.png")}
    assert saved <= {(c["notebook"], c["figure"]) for c in checked}, "every saved figure went through the check"
    bad = {f"{c['notebook']}/{c['figure']}": c["problems"] for c in checked if c["problems"]}
    assert not bad, bad


def test_no_report_page_holds_the_same_image_twice(smoke_report):
    out, _ = smoke_report
    for name in NAMES:
        images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", (out / name / f"{name}.html").read_text())
        repeated = len(images) - len(set(images))
        assert repeated == 0, f"{name}: {repeated} image(s) shown twice"


def test_index_lists_every_notebook(smoke_report):
    out, _ = smoke_report
    page = (out / "index.html").read_text()
    for name in NAMES:
        assert f"<tr id='{name}'>" in page and f"href='{name}/{name}.html'" in page
    assert "failed" not in page.split("</p>", 1)[1].replace("0 failed", "")


def test_nbval_reproduces_the_seeded_result_cells(smoke_report):
    out, _ = smoke_report
    executed = [str(out / name / f"{name}.ipynb") for name in NAMES]
    jobs = [subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env",
         "-p", "no:cacheprovider", "--rootdir", str(out), *executed[i::NBVAL_JOBS]],
        cwd=ROOT, env={**os.environ, **KERNEL_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(min(NBVAL_JOBS, len(executed)))]
    outputs = [job.communicate(timeout=400) for job in jobs]
    for job, (stdout, stderr) in zip(jobs, outputs):
        assert job.returncode == 0, stdout[-3000:] + stderr[-2000:]
        assert " passed" in stdout


@pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
                    reason="no Chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(smoke_report):
    out, _ = smoke_report
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_report_browser.py"), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in NAMES:
        assert f"{name}/{name}.html: '{name}'" in done.stdout
