"""Run records and the folders runs write into, for reports and sweeps alike.

Every executed notebook leaves one ``run.json`` of one schema (:func:`run_record`): UTC
timestamps, written atomically, listing the files the run wrote. A run is executed into a fresh
staging folder and swapped into its place only when it is done (:func:`publish`), so:

- a run that fails keeps the previous good run in place (the failed attempt is kept beside it);
- only the files a previous run listed in its ``run.json`` are ever deleted: files a user put in
  a run folder are carried over into the new run's folder;
- a folder that holds no run record (``check_replaceable``) is never replaced.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
from datetime import datetime, timezone
from pathlib import Path

#: The record of one executed notebook, in its folder.
RUN_FILE = "run.json"
#: The ``kind`` every run record carries.
RUN_KIND = "fpwb-run"
#: Hidden folders beside the run folders: runs in progress, and failed attempts kept aside.
STAGING_DIR = ".fpwb-staging"
FAILED_DIR = ".fpwb-failed"


def now() -> str:
    """The current time in UTC, ISO 8601 to the second (every timestamp a record holds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path):
    """A JSON file's data, or None when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_text(path, text: str) -> Path:
    """Write text through a temporary file in the same folder, so a crash never leaves half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a report from a web server
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path, data) -> Path:
    """Write JSON atomically (:func:`write_text`)."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def run_record(*, name: str, notebook: str, parameters: dict, status: str, error: dict | None,
               started: str, finished: str, wall_time: float, files=(), host: str | None = None,
               **context) -> dict:
    """The ``run.json`` of one executed notebook (reports and sweeps share it).

    error: None, or ``{"type", "message", "cell", "source"}`` (the failing cell's number and
    first line, when the notebook raised). files: the paths, relative to the run folder, that the
    run wrote; ``run.json`` itself is added. host: where the notebook ran (default: here).
    context: what the caller adds (a sweep's ``sweep_id`` and grid ``values``).
    """
    if status not in ("ok", "failed"):
        raise ValueError(f"status must be 'ok' or 'failed', got {status!r}")
    return {"kind": RUN_KIND, "name": name, "notebook": notebook, "parameters": parameters,
            "status": status, "error": error, "started": started, "finished": finished,
            "wall_time": round(float(wall_time), 3), "host": host or socket.gethostname(), **context,
            "files": sorted({*map(str, files), RUN_FILE})}


def read_record(folder) -> dict | None:
    """The run record of a run folder, or None when it holds none (or not one of ours). Records
    written before this schema (a sweep's ``run`` and ``seconds``) are read as this schema."""
    record = read_json(Path(folder) / RUN_FILE)
    if not isinstance(record, dict) or "status" not in record:
        return None
    if "name" not in record and "run" in record:  # a sweep's record before this schema
        record = {**record, "name": record["run"], "wall_time": record.get("seconds") or 0.0}
    if "name" not in record:
        return None
    return record


def stamp() -> str:
    """The current UTC time for a file name: ``20260101T120000Z``."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def files_of(folder) -> list[str]:
    """Every file under ``folder``, as sorted posix paths relative to it."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def check_writable(folder) -> Path:
    """Create ``folder`` (and its parents) and check a file can be written there; a ValueError
    with a one-line message otherwise (a path under a file, a read-only place)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".fpwb-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"cannot write into {folder}: {reason}"
                         + (f" ({err.filename})" if err.filename and str(err.filename) != str(folder)
                            else "")) from None
    return folder


def check_replaceable(folder, *, inputs=()) -> None:
    """Refuse (ValueError) to replace ``folder`` when it is a file, holds files but no run record
    (it was not written by fpwb), or holds one of ``inputs`` (the notebook the run reads)."""
    folder = Path(folder).resolve()
    for path in inputs:
        path = Path(path).resolve()
        if folder == path or folder in path.parents:
            raise ValueError(f"{path} lies inside {folder}, the folder its run would replace; "
                             f"copy the notebook elsewhere or pass another --out")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a run folder; move it or pass another --out")
    if read_record(folder) is None and any(folder.iterdir()):
        raise ValueError(f"{folder} exists and was not written by fpwb (no {RUN_FILE}); it is left "
                         f"as it is: move it or pass another --out")


def staging_folder(final) -> Path:
    """A new, empty folder beside ``final`` (same file system) for a run to be written into."""
    final = Path(final)
    folder = final.parent / STAGING_DIR / f"{final.name}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    return folder


def discard(staging) -> None:
    """Remove a staging folder (everything in it was written by the run)."""
    staging = Path(staging)
    shutil.rmtree(staging, ignore_errors=True)
    _remove_if_empty(staging.parent)


def publish(staging, final) -> Path:
    """Swap a finished run from ``staging`` into ``final``; returns where the run now is.

    The run in ``staging`` must hold its record. A failed run does not replace a previous run
    that succeeded: it goes to ``<parent>/.fpwb-failed/<name>`` and that path is returned.
    Otherwise the previous run's files (those its record lists) are deleted, and every other
    file in its folder (the user's) is carried into the new folder; one the new run also wrote
    stays in ``<parent>/<name>.kept-<time>``.
    """
    staging, final = Path(staging), Path(final)
    record = read_record(staging)
    if record is None:
        raise ValueError(f"{staging} holds no {RUN_FILE}; only a recorded run is published")
    check_replaceable(final)
    previous = read_record(final) if final.exists() else None
    if record["status"] != "ok" and previous is not None and previous["status"] == "ok":
        failed = final.parent / FAILED_DIR / final.name
        if failed.exists() and read_record(failed) is not None:
            shutil.rmtree(failed)
        failed.parent.mkdir(exist_ok=True)
        staging.replace(failed)
        _remove_if_empty(staging.parent)
        return failed
    if not final.exists():
        staging.replace(final)
        _remove_if_empty(staging.parent)
        return final
    old = staging.parent / f"{final.name}-previous-{secrets.token_hex(4)}"
    final.replace(old)
    staging.replace(final)
    owned = _owned(previous, old) if previous else set()
    for relative in files_of(old):
        source = old / relative
        if relative in owned:
            source.unlink()
        elif not (final / relative).exists():
            (final / relative).parent.mkdir(parents=True, exist_ok=True)
            source.replace(final / relative)
    prune(old)
    if old.exists():  # the user's files that the new run wrote over: kept beside it
        old.replace(final.parent / f"{final.name}.kept-{stamp()}")
    _remove_if_empty(staging.parent)
    return final


def remove_run(folder) -> None:
    """Delete the files a run's record lists (all files, for a record that lists none) and the
    folders left empty; files the run did not write stay."""
    folder = Path(folder)
    record = read_record(folder)
    if record is None:
        return
    for relative in _owned(record, folder):
        (folder / relative).unlink(missing_ok=True)
    prune(folder)


def _owned(record: dict, folder: Path) -> set:
    """The files of ``folder`` its record says the run wrote (every file, for a record from
    before records listed them); never a path outside the folder."""
    present = files_of(folder)
    listed = record.get("files", present)
    return {p for p in present if p in set(map(str, listed))}


def prune(folder: Path) -> None:
    """Remove the empty folders under ``folder``, and ``folder`` itself when it ends up empty."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            _remove_if_empty(path)
    _remove_if_empty(folder)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
