"""Check the built site for source code that escaped its code block.

A snippet include (``--8<-- "file.py:region"``) outside a code fence is pasted into the Markdown as
plain text, so the function it includes renders as paragraphs: the build succeeds and the page reads
as prose with Python in it. This script reads every HTML page under site/ and flags paragraphs and
list items whose own text (inline code, math and code blocks removed) has lines that look like Python.

Usage (after ``mkdocs build``):  python docs/checks/check_site.py [site]
Exit status 1 and one line per finding when a page has source outside a code block.
"""
from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

# A line that alone is enough: it only appears in source, never in the book's prose.
STRONG = re.compile(
    r"^\s*(def \w+\(|class \w+[(:]|async def |# --8<--|from [\w.]+ import |import \w+(\.\w+)*( as \w+)?$"
    r'|"""|@\w+(\.\w+)*(\(.*\))?$)'
)
# Lines that are source-like; two of them in one paragraph count as a finding.
WEAK = re.compile(
    r"^\s*(return\b|raise \w+|yield\b|(if|elif|for|while|with) .*:$|else:$|try:$|except\b.*:$"
    r"|\w+(, \w+)* = .*[(\[].*|\w+ [+\-*/]?= [\w.(]+.*#)"
    r"|\bxp\.\w+\(|\bself\.\w+\("
)
# Elements whose text is prose; text inside SKIP elements (code, math) does not count.
PROSE = {"p", "li", "td", "th", "dd", "blockquote"}
SKIP = {"code", "pre", "script", "style", "svg", "math"}


class _Collector(HTMLParser):
    """Gathers the text of each prose element that is not inside code or math."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []   # (tag, skipped) of the open elements
        self.texts: list[list[str]] = []          # one buffer per open prose element
        self.done: list[str] = []

    def _skipping(self) -> bool:
        return any(skipped for _, skipped in self.stack)

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        skipped = tag in SKIP or "arithmatex" in classes
        if tag in {"br", "img", "hr", "input", "meta", "link"}:
            return
        self.stack.append((tag, skipped))
        if tag in PROSE and not self._skipping():
            self.texts.append([])

    def handle_endtag(self, tag):
        if not any(t == tag for t, _ in self.stack):
            return
        while self.stack:
            t, skipped = self.stack.pop()
            if t in PROSE and not skipped and not self._skipping() and self.texts:
                self.done.append("".join(self.texts.pop()))
            if t == tag:
                break

    def handle_data(self, data):
        if self.texts and not self._skipping():
            self.texts[-1].append(data)


def findings(html: str) -> list[str]:
    """Source-looking lines of each prose element that has them, one string per element."""
    parser = _Collector()
    parser.feed(html)
    found = []
    for text in parser.done:
        lines = [line for line in text.splitlines() if line.strip()]
        strong = [line for line in lines if STRONG.search(line)]
        weak = [line for line in lines if WEAK.search(line)]
        if strong or len(weak) >= 2:
            found.append((strong or weak)[0].strip()[:100])
    return found


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else "site")
    pages = sorted(site.rglob("*.html"))
    if not pages:
        print(f"check_site: no HTML pages under {site}/ (run mkdocs build first)", file=sys.stderr)
        return 2
    bad = 0
    for page in pages:
        for line in findings(page.read_text(encoding="utf-8")):
            print(f"{page.relative_to(site)}: source code outside a code block: {line}")
            bad += 1
    if bad:
        print(f"check_site: {bad} paragraph(s) of source code outside code blocks; fence the snippet"
              ' include: ```python / --8<-- "file.py:region" / ```', file=sys.stderr)
        return 1
    print(f"check_site: {len(pages)} pages, no source code outside code blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
