"""``make readme-check``: the README numbers that differ from the latest report.

Convention: a number the README quotes from a notebook is followed at once by an HTML comment
naming its source, ``<notebook>:<key>``; GitHub does not render the comment::

    | backprop | 86.2% <!-- 07_depth:backprop --> |
    backprop is 11.6x <!-- 10_efficiency:details.slowdown.4096 --> slower at width 4096

- ``<notebook>`` is the notebook's name (its folder in the report); the number comes from
  ``<report>/<notebook>/results.json``.
- ``<key>`` is a headline name (``"backprop"``, spaces allowed) or, when the headline has no such
  name, a dotted path from the top of results.json (``details.slowdown.4096``, list items by
  index: ``rows.0.acc``).
- Between the number and the comment only a unit (``%``, ``x`` or ``×``) and Markdown emphasis
  (``**``, ``_``, a backtick) may stand. ``%`` means the report holds a share (0-1) that the
  README shows times 100; a report value above 1 is taken as a percentage already.
- The number matches when the report's value, rounded to the README's decimals, is the README's
  number (``1,138`` is 1138).

    python -m fpwb.runs.readme_check [README.md] [--report reports]

Prints one line per number that differs or whose source is missing, then a count; exit status 0
when all match, 1 when some differ, 2 when the README or the report cannot be read.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import records

QUOTE = re.compile(
    r"(?<![\d.,])(?P<number>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
    r"\s?(?P<unit>%|x|×)?[*_`]*\s*"
    r"<!--\s*(?P<notebook>[\w.-]+):(?P<key>[^>]*?)\s*-->")


@dataclass
class Quote:
    """A number the README quotes, where it is, and its source."""

    line: int
    text: str
    number: float
    decimals: int
    unit: str
    notebook: str
    key: str


def quotes(text: str) -> list[Quote]:
    """Every marked number in a README's text, in order."""
    found = []
    for match in QUOTE.finditer(text):
        number = match["number"].replace(",", "")
        found.append(Quote(text.count("\n", 0, match.start()) + 1,
                           match["number"] + (match["unit"] or ""), float(number),
                           len(number.partition(".")[2]), match["unit"] or "",
                           match["notebook"], match["key"]))
    return found


def lookup(results: dict, key: str):
    """The headline entry ``key``, else the value at dotted path ``key``; KeyError when absent."""
    headline = results.get("headline")
    if isinstance(headline, dict) and key in headline:
        return headline[key]
    value = results
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(key)
    return value


def shown(quote: Quote, value: float) -> float:
    """The report's value on the README's scale: a share as a percentage for ``%``."""
    return value * 100 if quote.unit == "%" and abs(value) <= 1 else value


def matches(quote: Quote, value) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return abs(shown(quote, value) - quote.number) <= 0.5 * 10.0 ** -quote.decimals + 1e-9


def check(readme, report_dir) -> list[str]:
    """One line per quoted number that differs from the report or whose source is missing."""
    readme, report_dir = Path(readme), Path(report_dir)
    problems, cache = [], {}
    for quote in quotes(readme.read_text(encoding="utf-8")):
        where = f"{readme}:{quote.line}: {quote.text} ({quote.notebook}:{quote.key})"
        path = report_dir / quote.notebook / "results.json"
        if path not in cache:
            cache[path] = records.read_json(path)
        results = cache[path]
        if not isinstance(results, dict):
            problems.append(f"{where}: no {path} (run `fpwb report {quote.notebook}`)")
            continue
        try:
            value = lookup(results, quote.key)
        except KeyError:
            names = ", ".join(results.get("headline") or {}) or "none"
            problems.append(f"{where}: {path} has no {quote.key!r} (headline: {names})")
            continue
        if not matches(quote, value):
            report_text = (f"{shown(quote, value):.{quote.decimals}f}{quote.unit} ({value!r})"
                           if isinstance(value, (int, float)) and not isinstance(value, bool)
                           else repr(value))
            problems.append(f"{where}: the report has {report_text}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpwb.runs.readme_check",
                                     description="List the README numbers that differ from a report.")
    parser.add_argument("readme", nargs="?", default="README.md")
    parser.add_argument("--report", default="reports", help="report folder (default: reports)")
    args = parser.parse_args(argv)
    readme, report_dir = Path(args.readme), Path(args.report)
    if not readme.is_file():
        print(f"readme-check: no {readme}", file=sys.stderr)
        return 2
    if not report_dir.is_dir():
        print(f"readme-check: no report folder {report_dir}; run `make report` first", file=sys.stderr)
        return 2
    problems = check(readme, report_dir)
    for line in problems:
        print(line)
    total = len(quotes(readme.read_text(encoding="utf-8")))
    print(f"readme-check: {total} quoted number(s) checked against {report_dir}, "
          f"{len(problems)} differ or have no source")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
