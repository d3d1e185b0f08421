"""Notebooks into results.

- ``experiments``: what notebooks call (working directory, device, output folder, result files).
- ``notebook``: the one notebook runner: declared parameters and their parsing, the papermill
  execution, a run written aside and swapped into its folder.
- ``records``: the one ``run.json`` schema (UTC times, atomic writes, the files a run wrote) and
  the folder swap that never deletes what a run did not write.
- ``report``: the notebooks into a report with an index (``fpwb report``).
- ``sweep``: a notebook over a parameter grid on Dask (``fpwb sweep``), from ``grid`` (the grid
  file and run names), ``store`` (the sweep folder, its lock, recording runs), ``workers`` (the
  Dask tasks), ``tables`` (results.csv, summary figure, sweep.json) and ``hparams`` (one
  TensorBoard run per grid point).
- ``lab`` (``make lab``) and ``readme_check`` (``make readme-check``).

May import: papermill, nbconvert, dask, jupyterlab, torch.utils.tensorboard, and nothing of the
rest of fpwb (it runs notebooks; the notebooks import fpwb).
"""
