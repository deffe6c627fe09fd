// MathJax 3 configuration for pymdownx.arithmatex (generic mode): typeset only the
// `arithmatex` spans/divs, and re-typeset after mkdocs-material swaps the page content.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
    tags: "none"
  },
  svg: {
    fontCache: "global"   // one <defs> of glyph paths per page, reused by every formula
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex"
  }
};

document$.subscribe(() => {
  if (!window.MathJax || !MathJax.typesetPromise) return;   // not loaded yet: startup typesets
  MathJax.startup.output.clearCache()
  MathJax.typesetClear()
  MathJax.texReset()
  MathJax.typesetPromise()
})
