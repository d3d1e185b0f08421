"""Open a report in headless Chromium and check that every page renders with its figures.

    python scripts/check_report_browser.py [REPORT_DIR] [--screenshot index.png]

The report folder is served on 127.0.0.1 together with a checker page; Chromium loads the checker,
which opens index.html and every HTML page it links to in an iframe (same origin, so it can look
inside), waits for each to load and counts the images that decoded (naturalWidth > 0). Chromium
prints the checker's DOM (--dump-dom) and this script reads the verdict from it.

Passes when index.html lists at least one notebook, every linked page loads with a title, has at
least one image, and all its images decoded, and no cell output shows an HTML entity as text (a
literal ``&middot;``). Cell outputs that show nothing (a widget only a live kernel can draw, such
as a notebook progress bar) are listed as warnings. Exit status 0 on pass, 1 on failure, 2 when
Chromium is missing (Debian: apt-get install -y chromium).
"""
from __future__ import annotations

import argparse
import functools
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHECKER = "__fpwb_check__.html"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")

# Loads index.html, then every .html page it links to, one at a time in an iframe.
CHECKER_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<pre id="result">pending</pre><iframe id="frame" width="1200" height="900"></iframe>
<script>
const PAGE_TIMEOUT_MS = %(timeout_ms)d;
const DRAWN = "img, svg, canvas, video, iframe, table";  // an output that shows these is not blank
const ENTITY = /&(#[0-9]+|#x[0-9a-fA-F]+|[a-zA-Z]+);/g;  // shown as text: it was escaped twice
function visit(url) {
  return new Promise(resolve => {
    const frame = document.getElementById("frame");
    let done = false;
    const finish = timedOut => {
      if (done) return;
      done = true;
      const doc = frame.contentDocument;
      const images = doc ? Array.from(doc.images) : [];
      const outputs = doc ? Array.from(doc.querySelectorAll(".jp-OutputArea-output")) : [];
      resolve({url, timedOut, title: doc ? doc.title : null,
               images: images.length,
               decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
               broken: images.filter(i => !(i.complete && i.naturalWidth > 0))
                             .map(i => i.src.slice(0, 80)),
               links: doc ? Array.from(doc.querySelectorAll("a[href$='.html']"))
                                 .map(a => a.getAttribute("href")) : [],
               rows: doc ? doc.querySelectorAll("table.runs > tbody > tr").length : 0,
               blank: outputs.filter(o => !o.innerText.trim() && !o.querySelector(DRAWN)).length,
               entities: [...new Set(outputs.flatMap(o => o.innerText.match(ENTITY) || []))]});
    };
    frame.onload = () => setTimeout(() => finish(false), 200);
    setTimeout(() => finish(true), PAGE_TIMEOUT_MS);
    frame.src = url;
  });
}
(async () => {
  const index = await visit("index.html");
  const pages = [];
  for (const link of index.links) pages.push(await visit(link));
  document.getElementById("result").textContent = JSON.stringify({index, pages});
})();
</script></body></html>
"""


def find_browser(name: str | None) -> str | None:
    for candidate in ([name] if name else BROWSERS):
        path = shutil.which(candidate)
        if path:
            return path
    return None


class _Handler(SimpleHTTPRequestHandler):
    checker: bytes = b""

    def do_GET(self):
        if self.path.lstrip("/") == CHECKER:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(self.checker)))
            self.end_headers()
            self.wfile.write(self.checker)
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


def inspect_report(report_dir: Path, browser: str, timeout_s: float = 60.0) -> dict:
    """Load the report in headless Chromium; returns {"index": {...}, "pages": [...]}."""
    _Handler.checker = (CHECKER_PAGE % {"timeout_ms": 20000}).encode()
    handler = functools.partial(_Handler, directory=str(report_dir))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server, \
            tempfile.TemporaryDirectory(prefix="fpwb-chromium-") as profile:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/{CHECKER}"
        try:
            dom = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}",
                                  f"--virtual-time-budget={int(timeout_s * 1000)}", "--dump-dom", url],
                                 capture_output=True, text=True, timeout=timeout_s + 60).stdout
        finally:
            server.shutdown()
    match = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    if not match or match.group(1) == "pending":
        raise RuntimeError(f"the checker page did not finish in the browser; DOM starts: {dom[:300]!r}")
    return json.loads(html.unescape(match.group(1)))


def problems(found: dict) -> list[str]:
    """What is wrong with the rendered report; empty when it passes."""
    index, pages = found["index"], found["pages"]
    issues = []
    if index["timedOut"] or not index["title"]:
        issues.append("index.html did not load")
    if index["rows"] < 1 or not pages:
        issues.append(f"index.html lists {index['rows']} notebook(s) and links {len(pages)} page(s)")
    if index["decoded"] != index["images"]:
        issues.append(f"index.html: {index['images'] - index['decoded']} image(s) did not load: "
                      f"{index['broken']}")
    for page in pages:
        if page["timedOut"] or not page["title"]:
            issues.append(f"{page['url']}: did not load")
        elif page["images"] == 0:
            issues.append(f"{page['url']}: no figures")
        elif page["decoded"] != page["images"]:
            issues.append(f"{page['url']}: {page['images'] - page['decoded']} of {page['images']} "
                          f"image(s) did not load: {page['broken']}")
        if page["entities"]:
            issues.append(f"{page['url']}: HTML entities shown as text: {', '.join(page['entities'])}")
    return issues


def warnings(found: dict) -> list[str]:
    """What a reader would miss that does not fail the check: outputs that show nothing."""
    return [f"{page['url']}: {page['blank']} cell output(s) show nothing (widgets without a kernel?)"
            for page in found["pages"] if page["blank"]]


def screenshot(path: Path, report_dir: Path, browser: str):
    with tempfile.TemporaryDirectory(prefix="fpwb-chromium-") as profile:
        subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}",
                        "--window-size=1400,1000", (report_dir / "index.html").resolve().as_uri()],
                       capture_output=True, timeout=120, check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", nargs="?", default="reports", help="report folder (default: reports)")
    parser.add_argument("--browser", help=f"browser executable (default: first of {', '.join(BROWSERS)})")
    parser.add_argument("--screenshot", help="also save a PNG of index.html here")
    args = parser.parse_args(argv)
    report_dir = Path(args.report)
    if not (report_dir / "index.html").is_file():
        print(f"no index.html in {report_dir}; run `fpwb report` (or `make report`) first", file=sys.stderr)
        return 1
    browser = find_browser(args.browser)
    if browser is None:
        print("no Chromium found; on Debian: apt-get install -y chromium", file=sys.stderr)
        return 2
    found = inspect_report(report_dir, browser)
    for page in [found["index"], *found["pages"]]:
        print(f"{page['url']}: {page['title']!r}, {page['decoded']}/{page['images']} images loaded")
    if args.screenshot:
        screenshot(Path(args.screenshot).resolve(), report_dir, browser)
    for warning in warnings(found):
        print(f"WARN {warning}", file=sys.stderr)
    issues = problems(found)
    for issue in issues:
        print(f"FAIL {issue}", file=sys.stderr)
    print("report renders" if not issues else f"{len(issues)} problem(s)")
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
