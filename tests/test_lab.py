"""make lab: JupyterLab starts (as root here, where the tests run as root) on a free port, prints
the URL to open, and serves the notebooks to a client holding the token; it is always stopped."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from fpwb.runs.experiments import repo_root

ROOT = repo_root()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    """(status, body) of an HTTP GET; (None, reason) while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        return None, str(err)


def test_make_lab_passes_the_port():
    done = subprocess.run(["make", "-n", "lab", "PORT=8899"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "-m fpwb.runs.lab --port 8899 --ip 127.0.0.1" in done.stdout


def test_lab_starts_prints_its_url_and_serves_the_notebooks():
    port, token = free_port(), "fpwb-test-token"
    process = subprocess.Popen([sys.executable, "-m", "fpwb.runs.lab", "--port", str(port),
                                "--token", token], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = process.stdout.readline()
        assert first == f"JupyterLab: open http://127.0.0.1:{port}/lab/tree/notebooks?token={token}\n"
        api = f"http://127.0.0.1:{port}/api/contents/notebooks"
        deadline = time.monotonic() + 120
        status, body = get(f"{api}?token={token}")
        while status is None:
            assert process.poll() is None, f"JupyterLab exited ({process.returncode}) as uid {os.geteuid()}"
            assert time.monotonic() < deadline, f"JupyterLab did not answer in 120 s: {body}"
            time.sleep(0.5)
            status, body = get(f"{api}?token={token}")
        assert status == 200
        names = {item["name"] for item in json.loads(body)["content"]}
        assert "00_quickstart.ipynb" in names
        assert get(api)[0] == 403  # no token, no notebooks
        status, page = get(f"http://127.0.0.1:{port}/lab/tree/notebooks/00_quickstart.ipynb?token={token}")
        assert status == 200 and "JupyterLab" in page
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        process.stdout.close()
