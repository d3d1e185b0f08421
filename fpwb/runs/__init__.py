"""Notebooks into results: ``experiments`` (paths, devices, result files a notebook writes),
``report`` (run the notebooks into a report with an index) and ``sweep`` (a notebook over a
parameter grid, on Dask).

May import: papermill, nbconvert, dask, and nothing of the rest of fpwb (it runs notebooks; the
notebooks import fpwb).
"""
