"""notebooks/04_explorer.ipynb in JupyterLab in headless Chromium, driven by Selenium as a user would.

JupyterLab starts as root would start it (``--allow-root``, a free port, a token) with the venv's
python and one OpenMP thread for the kernel, on a temporary folder that holds a copy of the
notebook whose ``out_dir`` points into that folder (and ``smoke = True``): the test writes nothing
into the repository (no ``reports/04_explorer`` overwritten, no outputs saved into the committed
notebook). Settings, workspace and runtime files live in the folder too, so a user's JupyterLab
setup changes nothing and the run is offline (no news, no update check).

In a 1400 px wide window the test runs the notebook (Run All), checks that the explorer panel is
still there with its slider readouts in view, presses step, moves the neurons slider with the
mouse and checks that the figure and the status change, then runs and pauses. It skips, saying
why, where Chromium, chromedriver or selenium is missing (Debian: apt-get install -y chromium
chromium-driver; pip install selenium). JupyterLab and the browser are always stopped; every wait
has a timeout. On failure a screenshot and the server's log are kept in pytest's tmp_path.
"""
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest

from fpwb.runs import experiments

ROOT = experiments.repo_root()
NOTEBOOK = ROOT / "notebooks" / "04_explorer.ipynb"
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
WINDOW = (1400, 1000)
#: Seconds for JupyterLab to answer, for the notebook to run, for the panel to react.
START_TIMEOUT, RUN_TIMEOUT, REACT_TIMEOUT = 60, 120, 20
#: Lab settings that keep it quiet and offline: no news or update check, no autosave.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install -y chromium)"),
    pytest.mark.skipif(CHROMEDRIVER is None,
                       reason="no chromedriver (Debian: apt-get install -y chromium-driver)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook_copy(folder: Path) -> Path:
    """04_explorer.ipynb in folder with two parameters set: out_dir to folder/out, and smoke
    (a few steps: the test is about the panel, not the learning)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for name, value in (("out_dir", str(folder / "out")), ("smoke", True)):
        cell.source, count = re.subn(rf"^{name} = \S+", f"{name} = {value!r}", cell.source, flags=re.M)
        assert count == 1, f"no {name} line in the parameters cell:\n{cell.source}"
    path = folder / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


def stop(process: subprocess.Popen, shutdown_url: str):
    """Shut JupyterLab down through its API (it stops its kernels first); then end whatever it
    started that is still there, and the server itself if it did not exit."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)  # kernels among them
    except psutil.NoSuchProcess:
        children = []
    try:
        urllib.request.urlopen(urllib.request.Request(shutdown_url, method="POST"), timeout=5)
        process.wait(timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a copy of the notebook; yields (base URL, token, notebook name)."""
    for name, value in SETTINGS.items():
        path = tmp_path / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    notebook = notebook_copy(tmp_path)
    port, token = free_port(), secrets.token_hex(16)
    env = {**{k: v for k, v in os.environ.items() if k != experiments.RUNNER_ENV},  # an interactive run
           "OMP_NUM_THREADS": "1",
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = (tmp_path / "jupyterlab.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--allow-root", "--no-browser", f"--port={port}",
         "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode}:\n"
                            + (tmp_path / "jupyterlab.log").read_text()[-3000:])
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {START_TIMEOUT} s:\n"
                                + (tmp_path / "jupyterlab.log").read_text()[-3000:])
                time.sleep(0.3)
        yield base, token, notebook.name
    finally:
        stop(process, f"{base}/api/shutdown?token={token}")
        log.close()


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER,
                                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(START_TIMEOUT)
    driver.set_script_timeout(RUN_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


#: The notebook's panel among the main area's widgets, through the JupyterLab application
#: (expose_app_in_browser). Not ``shell.currentWidget``: that follows the focus, which a headless
#: window need not give it (null in JupyterLab 4.6).
FIND_NOTEBOOK = """
const app = window.jupyterapp;
const panel = app && Array.from(app.shell.widgets("main")).find(w => w.sessionContext && w.content);
"""

#: Run All on that panel (activated first: the command acts on the notebook in focus).
RUN_ALL = FIND_NOTEBOOK + """
app.shell.activateById(panel.id);
app.commands.execute("notebook:run-all-cells");
"""

#: The notebook panel's state.
NOTEBOOK_STATE = FIND_NOTEBOOK + """
if (!panel) return null;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
const cells = panel.content.widgets.filter(c => c.model.type === "code");
return {kernel: kernel ? kernel.status : null,
        executed: cells.filter(c => c.model.executionCount !== null).length, cells: cells.length,
        errors: cells.flatMap(c => c.model.outputs.toJSON())
                     .filter(o => o.output_type === "error").map(o => o.ename + ": " + o.evalue)};
"""

#: The explorer panel: its status text, image source and whether its readouts are in view.
PANEL_STATE = """
const img = document.querySelector(".jp-OutputArea-output img.widget-image");
const status = Array.from(document.querySelectorAll(".widget-html-content"))
                    .find(e => e.textContent.includes("samples seen"));
if (!img || !status) return null;
const output = img.closest(".jp-OutputArea-output");
const box = output.getBoundingClientRect();
const readouts = Array.from(output.querySelectorAll(".widget-readout")).map(r => r.getBoundingClientRect());
return {status: status.textContent, image: img.src, imageWidth: img.getBoundingClientRect().width,
        scrolls: output.scrollWidth > output.clientWidth + 1,
        readouts: readouts.length,
        readoutsInView: readouts.filter(r => r.width > 0 && r.left >= box.left && r.right <= box.right + 1).length};
"""


def wait_for(driver, what: str, condition, timeout: float):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


def panel(driver):
    return driver.execute_script(PANEL_STATE)


def seen(state) -> int:
    return int(re.search(r"samples seen (\d+)", state["status"]).group(1))


def button(driver, label: str):
    return driver.find_element(By.XPATH, f"//button[contains(@class, 'widget-button')][normalize-space()='{label}']")


def test_explorer_panel_in_jupyterlab(lab, browser, tmp_path):
    base, token, name = lab
    driver = browser
    try:
        driver.get(f"{base}/lab/tree/{name}?token={token}")
        wait_for(driver, "the notebook's kernel",
                 lambda d: (s := d.execute_script(NOTEBOOK_STATE)) and s["kernel"] == "idle", START_TIMEOUT)
        driver.execute_script(RUN_ALL)
        state = wait_for(driver, "Run All to finish",
                         lambda d: (s := d.execute_script(NOTEBOOK_STATE))["executed"] == s["cells"]
                         and s["kernel"] == "idle" and s, RUN_TIMEOUT)
        assert not state["errors"], state["errors"]
        assert (tmp_path / "out" / "results.json").is_file()  # the copy wrote where it was told

        # Run All left the panel alive (the last cell closes it only headless), paused, in view.
        start = wait_for(driver, "the explorer panel", panel, REACT_TIMEOUT)
        assert start["status"].endswith("paused"), start["status"]
        assert "&" not in start["status"]
        assert not start["scrolls"], "the panel scrolls sideways at a 1400 px wide window"
        assert start["readouts"] >= 10 and start["readoutsInView"] == start["readouts"], start
        assert start["imageWidth"] >= 360

        # step: one more batch (50 samples), a new figure
        button(driver, "step").click()
        stepped = wait_for(driver, "step to update the panel",
                           lambda d: (s := panel(d)) and seen(s) == seen(start) + 50 and s, REACT_TIMEOUT)
        assert stepped["image"] != start["image"]

        # dragging the neurons slider builds a new layer: other neuron count, a new figure
        neurons = driver.find_element(
            By.XPATH, "//div[contains(@class, 'widget-slider')][.//label[normalize-space()='neurons']]")
        handle = neurons.find_element(By.CSS_SELECTOR, ".noUi-handle")
        ActionChains(driver).click_and_hold(handle).move_by_offset(40, 0).release().perform()
        moved = wait_for(driver, "the neurons slider to rebuild the layer",
                         lambda d: (s := panel(d)) and "/12 " not in s["status"] and s, REACT_TIMEOUT)
        assert seen(moved) == 0 and moved["image"] != stepped["image"], moved["status"]
        count = int(re.search(r"fired \d+/(\d+)", moved["status"]).group(1))
        readout = neurons.find_element(By.CSS_SELECTOR, ".widget-readout").text
        assert count > 12 and readout == str(count), (count, readout)

        # run, then pause: the status says which
        button(driver, "run").click()
        wait_for(driver, "the run to go", lambda d: (s := panel(d)) and s["status"].endswith("running")
                 and seen(s) > 0, REACT_TIMEOUT)
        button(driver, "pause").click()
        paused = wait_for(driver, "pause", lambda d: (s := panel(d)) and s["status"].endswith("paused") and s,
                          REACT_TIMEOUT)
        time.sleep(0.5)
        assert panel(driver)["status"] == paused["status"]  # nothing moves once paused
    except BaseException:
        driver.save_screenshot(str(tmp_path / "failure.png"))
        print(f"screenshot: {tmp_path / 'failure.png'}; JupyterLab log: {tmp_path / 'jupyterlab.log'}")
        raise
