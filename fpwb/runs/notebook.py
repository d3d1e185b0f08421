"""The one notebook runner behind ``fpwb report`` and ``fpwb sweep``.

- :class:`Parameters`: what a notebook declares in its cell tagged ``parameters`` (papermill's
  reading of it), and :meth:`Parameters.resolve`, the one parser of given values: undeclared
  names are an error, command-line strings take the type of the default.
- :func:`execute`: one papermill execution from the repository root, with quiet kernels and
  ``FPWB_RUNNER`` set in the kernel's environment (so :func:`fpwb.runs.experiments.output_dir`
  knows the run is not an interactive one); a failure inside the notebook is returned, not raised.
- :func:`run_notebook`: execute into a fresh staging folder, record the run (``run.json``, see
  :mod:`fpwb.runs.records`) and swap it into its folder.
"""
from __future__ import annotations

import ast
import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import records
from .experiments import RUNNER_ENV, repo_root

#: The parameter every notebook run by fpwb declares and the runner sets: its output folder.
OUT_PARAM = "out_dir"
#: Kernel options for headless runs: every kernel shutdown logs a "KeyboardInterrupt caught in
#: kernel" (jupyter_client interrupts first); errors are read from the notebook itself.
QUIET_KERNEL = ["--IPKernelApp.log_level=CRITICAL"]
_NOT_LITERAL = object()


class UndeclaredParameters(ValueError):
    """Values given for parameters a notebook does not declare."""

    def __init__(self, notebook: str, unknown: list, declared: list):
        self.notebook, self.unknown, self.declared = notebook, unknown, declared
        super().__init__(f"{notebook} does not declare parameter(s) {', '.join(unknown)}; "
                         f"it declares: {', '.join(declared)}")


def literal(source: str):
    """The JSON-able value of a default's source text, or ``literal.NOT_LITERAL`` when the
    default is an expression (``int(time.time())``) that only the notebook can evaluate."""
    try:
        value = ast.literal_eval(source)
        json.dumps(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NOT_LITERAL
    return value


literal.NOT_LITERAL = _NOT_LITERAL


def coerce(notebook: str, name: str, value, default):
    """A command-line string converted to the type of the parameter's default; other values
    (already typed, from YAML or Python) pass unchanged."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            flag = value.strip().lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(flag)
            return flag in ("true", "1", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        if default is None or default is _NOT_LITERAL:
            return value
        raise ValueError(f"parameter {name} of {notebook} expects a {type(default).__name__} "
                         f"(default {default!r}), got {value!r}") from None


@dataclass(frozen=True)
class Parameters:
    """The parameters a notebook declares: name -> the source text of its default."""

    notebook: Path
    sources: dict

    @classmethod
    def inspect(cls, path) -> Parameters:
        """Read the cell tagged ``parameters``; a ValueError when there is none or no ``out_dir``."""
        import papermill  # slow to import; `fpwb --help` should not wait for it

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"notebook {str(path)!r} does not exist")
        try:
            declared = papermill.inspect_notebook(str(path))
        except ValueError as exc:  # e.g. no kernel name in its metadata
            raise ValueError(f"notebook {str(path)!r}: {exc}") from None
        if not declared:
            raise ValueError(f"{path.name} has no cell tagged 'parameters'")
        if OUT_PARAM not in declared:
            raise ValueError(f"{path.name} declares no {OUT_PARAM!r} parameter; a notebook run by "
                             f"fpwb must declare an {OUT_PARAM} parameter (in its cell tagged "
                             f"'parameters') where it writes results.json; it declares "
                             f"{', '.join(declared)}")
        return cls(path, {name: info["default"] for name, info in declared.items()})

    @property
    def defaults(self) -> dict:
        """The defaults that are values (literals), by name."""
        values = {name: literal(source) for name, source in self.sources.items()}
        return {name: value for name, value in values.items() if value is not _NOT_LITERAL}

    @property
    def unpinned(self) -> dict:
        """The defaults that are expressions the notebook evaluates itself: name -> source."""
        return {name: s for name, s in self.sources.items() if literal(s) is _NOT_LITERAL}

    def resolve(self, given: dict, *, runner: str = "report runner",
                hint: str = "use --out for the report folder") -> dict:
        """The literal defaults overlaid with ``given`` (strings coerced to the default's type);
        ``out_dir`` is left to the runner. UndeclaredParameters for a name the notebook lacks."""
        if OUT_PARAM in given:
            raise ValueError(f"{OUT_PARAM} is set by the {runner} ({hint})")
        unknown = [name for name in given if name not in self.sources]
        if unknown:
            raise UndeclaredParameters(self.notebook.name, unknown, list(self.sources))
        defaults = {name: literal(source) for name, source in self.sources.items()}
        resolved = {k: v for k, v in defaults.items() if v is not _NOT_LITERAL}
        for name, value in given.items():
            resolved[name] = coerce(self.notebook.stem, name, value, defaults[name])
        return resolved


@contextlib.contextmanager
def runner_environment(runner: str):
    """``FPWB_RUNNER=<runner>`` in this process's environment, which the kernels inherit."""
    previous = os.environ.get(RUNNER_ENV)
    os.environ[RUNNER_ENV] = runner
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUNNER_ENV, None)
        else:
            os.environ[RUNNER_ENV] = previous


@dataclass
class Execution:
    """What one papermill execution did: error None when the notebook ran to its end."""

    error: dict | None
    started: str
    finished: str
    wall_time: float


def execute(source, target, parameters: dict, *, runner: str, progress: str | None = None) -> Execution:
    """Run notebook ``source`` into ``target`` with ``parameters`` (``out_dir`` among them) from the
    repository root. Never raises for the notebook's own failure, nor for a kernel that died:
    the error comes back as ``{"type", "message", "cell", "source"}``. progress: the label of a
    progress bar over cells, None for none."""
    import papermill

    started, start = records.now(), time.perf_counter()
    error = None
    try:
        with runner_environment(runner):
            papermill.execute_notebook(str(source), str(target), parameters=parameters,
                                       cwd=str(repo_root()), kernel_name="python3",
                                       progress_bar={"desc": progress} if progress else False,
                                       extra_arguments=QUIET_KERNEL)
    except papermill.PapermillExecutionError as exc:
        first = next((line.strip() for line in exc.source.splitlines() if line.strip()), "")
        error = {"type": exc.ename, "message": exc.evalue, "cell": exc.exec_count, "source": first}
    except Exception as exc:  # the kernel died or would not start: this run fails, others go on
        error = {"type": type(exc).__name__, "message": str(exc), "cell": None, "source": None}
    return Execution(error, started, records.now(), time.perf_counter() - start)


def retarget(executed, staging, final) -> None:
    """Make an executed notebook's injected ``out_dir`` name ``final``, the folder its run was
    swapped into, instead of the staging folder it ran in (so running it again writes there)."""
    import nbformat

    executed = Path(executed)
    if not executed.is_file():
        return
    nb = nbformat.read(executed, as_version=4)
    changed = False
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []) and str(staging) in cell.source:
            cell.source = cell.source.replace(str(staging), str(final))
            changed = True
    if changed:
        nbformat.write(nb, executed)


def describe_error(name: str, error: dict | None) -> str | None:
    """One line for a run's error: the failing cell and its first line when there is one."""
    if error is None:
        return None
    if error.get("cell") is not None:
        return (f"{name} failed in cell In [{error['cell']}] ({error.get('source', '')!r}): "
                f"{error['type']}: {error['message']}")
    return f"{name} failed: {error['type']}: {error['message']}"


def run_notebook(source, folder, parameters: dict, *, runner: str, progress: str | None = None,
                 finish=None, **context) -> tuple[dict, Path]:
    """Execute ``source`` as the run in ``folder``, never touching ``folder`` until it is done.

    The notebook runs in a staging folder beside ``folder`` (its ``out_dir``); ``finish(staging,
    execution)`` may add files there (an HTML page); then the record is written and the run is
    swapped in (:func:`fpwb.runs.records.publish`: a failed run keeps a previous good one).
    Returns the record and where the run now is. An interrupt (Ctrl-C, SIGTERM) removes the
    staging folder and leaves ``folder`` as it was.
    """
    source, folder = Path(source), Path(folder).resolve()
    records.check_replaceable(folder, inputs=[source])
    staging = records.staging_folder(folder)
    try:
        execution = execute(source, staging / source.name,
                            {**parameters, OUT_PARAM: str(staging)}, runner=runner,
                            progress=progress)
        retarget(staging / source.name, staging, folder)
        if finish is not None:
            finish(staging, execution)
        record = records.run_record(
            name=folder.name, notebook=source.name, parameters={**parameters, OUT_PARAM: str(folder)},
            status="ok" if execution.error is None else "failed", error=execution.error,
            started=execution.started, finished=execution.finished,
            wall_time=execution.wall_time, files=records.files_of(staging), **context)
        records.write_json(staging / records.RUN_FILE, record)
    except BaseException:
        records.discard(staging)
        raise
    return record, records.publish(staging, folder)
