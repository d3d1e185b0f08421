"""``make lab``: JupyterLab on the repository, on a chosen port, from anywhere.

    python -m fpwb.runs.lab [--port 8888] [--ip 127.0.0.1] [--token TOKEN]

Starts as root too (containers and CI run as root: ``--allow-root``), never opens a browser
itself, and prints the URL to open first. The port is the one asked for or none: when it is
taken, JupyterLab exits instead of moving to another port the printed URL would not name. A token
is drawn at random unless one is given. Notebooks run here are interactive runs: they write into
``reports/interactive/`` (see :func:`fpwb.runs.experiments.output_dir`).
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys

from .experiments import RUNNER_ENV, repo_root

DEFAULT_PORT = 8888


def lab_command(port: int, ip: str, token: str) -> list[str]:
    """The JupyterLab command line for the repository root."""
    return [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser",
            f"--ip={ip}", f"--port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={repo_root()}"]


def url(port: int, ip: str, token: str) -> str:
    """Where to point a browser: the notebooks folder in JupyterLab."""
    host = "localhost" if ip in ("0.0.0.0", "::", "") else ip
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/lab/tree/notebooks?token={token}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpwb.runs.lab", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument("--ip", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 to reach it from outside a container)")
    parser.add_argument("--token", help="access token (default: a random one)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1-65535, got {args.port}")
    token = args.token or secrets.token_hex(24)
    print(f"JupyterLab: open {url(args.port, args.ip, token)}", flush=True)
    os.environ.pop(RUNNER_ENV, None)  # kernels started here are interactive runs
    command = lab_command(args.port, args.ip, token)
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
