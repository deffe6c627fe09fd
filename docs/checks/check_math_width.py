"""Check in a headless Chromium that display equations render at phone width.

Below 45em the theme shrinks each display equation's box to its content; a CSS rule that clamps
MathJax's SVG (see docs/stylesheets/extra.css) once made every display equation 1 px wide there, and
no build error showed it. This script serves the built site, loads each page that has display math
in an iframe of the given widths (375 px, a phone, and 1280 px, a desktop, by default), waits for
MathJax to typeset it, and measures the rendered width of every display equation's <svg>.

It needs Chromium (Debian: ``apt-get install chromium``), so it is not part of pytest or .ci/run;
it skips with exit status 0 and a message when no Chromium is found. Run it after a build:

    NO_MKDOCS_2_WARNING=1 mkdocs build --strict
    python docs/checks/check_math_width.py            # every page with display math
    python docs/checks/check_math_width.py site foundations/attention/ --widths 320,375

Exit status 1, and one line per equation, when a display equation is not typeset or is 2 px wide
or less.
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
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MIN_WIDTH_PX = 2.0

# Loads each page in turn in an iframe of each width, waits for MathJax, and writes what it measured
# as JSON into <pre id="result">, which Chromium's --dump-dom prints.
HARNESS = """<!doctype html><html><body>
<pre id="result">pending</pre>
<script>
const pages = %(pages)s, widths = %(widths)s;
const sleep = ms => new Promise(r => setTimeout(r, ms));
async function measure(page, width) {
  const f = document.createElement('iframe');
  f.style.cssText = `width:${width}px;height:1200px;border:0`;
  const loaded = new Promise(r => f.onload = r);
  f.src = '/' + page;
  document.body.appendChild(f);
  await loaded;
  const w = f.contentWindow, d = f.contentDocument;
  for (let i = 0; i < 200 && !(w.MathJax && w.MathJax.startup && w.MathJax.startup.promise); i++) await sleep(50);
  if (w.MathJax && w.MathJax.startup && w.MathJax.startup.promise) await w.MathJax.startup.promise;
  await sleep(200);
  const out = [...d.querySelectorAll('div.arithmatex')].map((div, i) => {
    const svg = div.querySelector('mjx-container svg');
    return {index: i, tex: div.textContent.slice(0, 60),
            width: svg ? svg.getBoundingClientRect().width : null};
  });
  f.remove();
  return out;
}
(async () => {
  const results = [];
  for (const page of pages) for (const width of widths)
    results.push({page, width, equations: await measure(page, width)});
  document.getElementById('result').textContent = JSON.stringify(results);
})().catch(e => { document.getElementById('result').textContent = 'error: ' + e; });
</script></body></html>
"""


def pages_with_display_math(site: Path) -> list[str]:
    """Site-relative URLs of the built pages that hold at least one display equation."""
    found = []
    for page in sorted(site.rglob("index.html")):
        if '<div class="arithmatex">' in page.read_text(encoding="utf-8"):
            url = page.parent.relative_to(site).as_posix()
            found.append("" if url == "." else url + "/")
    return found


def serve(site: Path, harness: str) -> ThreadingHTTPServer:
    """An HTTP server for site/ on a free local port that also answers /__math_check.html."""

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/__math_check.html":
                body = harness.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", nargs="?", default="site", help="the built site (default: site)")
    ap.add_argument("pages", nargs="*", help="site-relative page URLs (default: every page with display math)")
    ap.add_argument("--widths", default="375,1280", help="viewport widths in px (default: 375,1280)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds for the whole Chromium run")
    args = ap.parse_args(argv)

    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                     if shutil.which(n)), None)
    if chromium is None:
        print("check_math_width: skipped, no chromium on PATH (apt-get install chromium)")
        return 0
    site = Path(args.site)
    pages = args.pages or pages_with_display_math(site)
    if not pages:
        print(f"check_math_width: no page with display math under {site}/ (run mkdocs build first)",
              file=sys.stderr)
        return 2
    widths = [int(w) for w in args.widths.split(",")]
    server = serve(site, HARNESS % {"pages": json.dumps(pages), "widths": json.dumps(widths)})
    url = f"http://127.0.0.1:{server.server_address[1]}/__math_check.html"
    try:
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3600000",
             "--dump-dom", url],
            capture_output=True, text=True, timeout=args.timeout).stdout
    finally:
        server.shutdown()
    match = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    text = html.unescape(match.group(1)) if match else "no result in the dumped DOM"
    if not text.startswith("["):
        print(f"check_math_width: the harness did not finish: {text[:200]}", file=sys.stderr)
        return 2
    bad = n = 0
    for result in json.loads(text):
        for eq in result["equations"]:
            n += 1
            if eq["width"] is None or eq["width"] <= MIN_WIDTH_PX:
                what = "not typeset" if eq["width"] is None else f"{eq['width']:.1f} px wide"
                print(f"{result['page'] or '/'} at {result['width']} px: display equation "
                      f"{eq['index']} is {what}: {eq['tex'].strip()}")
                bad += 1
    if bad:
        print(f"check_math_width: {bad} of {n} display equations did not render", file=sys.stderr)
        return 1
    print(f"check_math_width: {n} display equations on {len(pages)} pages at widths {widths} px, "
          f"all wider than {MIN_WIDTH_PX:g} px")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
