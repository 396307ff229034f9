"""Every page of the built site in headless Chromium (Debian's, driven by Playwright): no uncaught
JavaScript error, no request leaves the machine, MathJax typeset the math, every image loaded, no
Python traceback or warning, no path of the build machine, a claims table on every chapter page,
every chapter figure numbered and captioned with real alt text, no equation shown as an image; and
at a 400 px viewport no claims table or display equation widens the page. Screenshots go to
_build/screenshots/ (400 px ones to _build/screenshots/400px/)."""

import functools
import http.server
import os
import re
import shutil
import sys
import threading

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing on CI: .ci/run installs the Debian package `chromium`")
        pytest.skip("Chromium not found (install Debian's `chromium`); the browser test needs it")
    return path


@pytest.fixture(scope="module")
def site(built_site):
    assert built_site.returncode == 0, built_site.stdout[-3000:] + built_site.stderr[-3000:]
    html = ROOT / "_build" / "html"
    handler = functools.partial(QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# A path of the machine that built the site: the project folder, the Python prefix, or any absolute
# path under a home, temporary or root folder.
BUILD_PATHS = re.compile(
    "|".join(
        [re.escape(str(ROOT)), re.escape(sys.prefix)]
        + [r"(?<![\w.~])/(?:home|tmp|root|Users|work|private/var)/\w"]
    )
)
# A Python warning as the warnings module prints it: "RuntimeWarning: divide by zero ...".
PY_WARNING = re.compile(r"\b[A-Z][A-Za-z]*Warning: ")
# Alt text that is a file name or a content hash (what MyST-NB writes when no alt text is given).
HASH_ALT = re.compile(r"(^|/)[0-9a-f]{16,}(\.\w+)?$|\.(png|jpe?g|svg)$", re.I)

# Chapter outputs that are images: each must sit in a numbered, captioned figure with real alt text
# (SymPy's PNG rendering of an equation would sit in a bare output).
FIGURE_PROBLEMS_JS = """() => Array.from(document.querySelectorAll('.cell_output img, .output img'))
  .map(img => {
    const fig = img.closest('figure');
    const cap = fig && fig.querySelector('figcaption');
    const capText = cap ? cap.innerText.trim() : '';
    return {src: img.getAttribute('src'), alt: img.getAttribute('alt') || '',
            caption: capText, numbered: !!(cap && cap.querySelector('.caption-number'))};
  })"""

# Elements wider than the viewport, with no ancestor that scrolls them inside its own box.
OVERFLOW_JS = """() => {
  const vw = document.documentElement.clientWidth;
  const scrolls = el => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const ox = getComputedStyle(a).overflowX;
      if ((ox === 'auto' || ox === 'scroll' || ox === 'hidden')
          && a.getBoundingClientRect().right <= vw + 1) return true;
    }
    return false;
  };
  const wide = [];
  for (const el of document.querySelectorAll(
      'table.lmbook-claims, mjx-container[display="true"], div.math, .text_latex')) {
    const r = el.getBoundingClientRect();
    const ox = getComputedStyle(el).overflowX;
    const ownBox = (ox === 'auto' || ox === 'scroll') && r.right <= vw + 1;
    if (r.right > vw + 1 && !ownBox && !scrolls(el)) {
      const name = el.tagName.toLowerCase() + '.' + (el.className || '');
      wide.push(name + ' right=' + Math.round(r.right));
    }
  }
  return {page: document.documentElement.scrollWidth, viewport: vw, wide: wide};
}"""


def _wait_for_math(page):
    has_math = page.evaluate(
        "document.querySelector('.math, .MathJax, mjx-container, span.math') !== null"
    )
    if has_math:
        page.wait_for_function(
            "window.MathJax && MathJax.startup && MathJax.startup.document", timeout=20000
        )
        page.evaluate("MathJax.startup.promise")
    return has_math


def _pages(html):
    skip = ("_static", "_sources", "_downloads", "_images")
    return sorted(
        p.relative_to(html).as_posix()
        for p in html.rglob("*.html")
        if p.relative_to(html).parts[0] not in skip
    )


def _screenshot(page, folder, rel):
    """The full page, as folder/<path with / as __>.png."""
    page.screenshot(
        path=str(folder / (rel.replace("/", "__").removesuffix(".html") + ".png")), full_page=True
    )


def test_every_page_renders(site):
    executable = _chromium()
    playwright = pytest.importorskip("playwright.sync_api")
    html, base = site
    shots = ROOT / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    problems = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors, external = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request",
            lambda r: (
                external.append(r.url) if not r.url.startswith((base, "data:", "blob:")) else None
            ),
        )
        for rel in _pages(html):
            errors.clear()
            external.clear()
            page.goto(f"{base}/{rel}", wait_until="load")
            redirect = re.search(
                r'http-equiv="refresh" content="0; url=([^"]+)"', (html / rel).read_text(), re.I
            )
            if redirect:  # the root index redirects
                page.wait_for_url(f"**/{redirect.group(1)}", wait_until="load")
            has_math = _wait_for_math(page)
            if has_math:
                n_typeset = page.evaluate("document.querySelectorAll('mjx-container').length")
                n_errors = page.evaluate("document.querySelectorAll('mjx-merror').length")
                if n_typeset == 0 or n_errors:
                    problems.append(
                        f"{rel}: MathJax typeset {n_typeset} formulas with {n_errors} errors"
                    )
            broken = page.evaluate(
                "Array.from(document.images)"
                ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
            )
            if broken:
                problems.append(f"{rel}: images that did not load: {broken}")
            text = page.inner_text("body")
            if "Traceback (most recent call last)" in text:
                problems.append(f"{rel}: a Python traceback is shown")
            for found in sorted(set(m.group(0) for m in BUILD_PATHS.finditer(page.content()))):
                problems.append(f"{rel}: a path of the build machine is on the page: {found!r}")
            warned = sorted({text[m.start() : m.end() + 40] for m in PY_WARNING.finditer(text)})
            if warned:
                problems.append(f"{rel}: a Python warning is shown: {warned}")
            if rel.startswith("notebooks/"):
                for img in page.evaluate(FIGURE_PROBLEMS_JS):
                    if not img["caption"] or not img["numbered"]:
                        problems.append(
                            f"{rel}: an output image without a numbered caption (a figure needs "
                            f"mystnb figure metadata; an equation must be typeset): {img['src']}"
                        )
                    if not img["alt"].strip() or HASH_ALT.search(img["alt"].strip()):
                        problems.append(
                            f"{rel}: figure {img['src']} has no real alt text: {img['alt']!r}"
                        )
            if rel.startswith("notebooks/") and page.query_selector("table.lmbook-claims") is None:
                problems.append(f"{rel}: no claims table")
            if rel.startswith("notebooks/") or rel == "book/claims.html":
                pulls = page.evaluate(
                    "Array.from(document.querySelectorAll('figure img'))"
                    ".filter(i => i.src.endsWith('.svg') && i.complete && i.naturalWidth > 0)"
                    ".length"
                )
                if not pulls:
                    problems.append(f"{rel}: the pull plot did not load")
            if errors:
                problems.append(f"{rel}: uncaught JavaScript errors: {errors}")
            if external:
                problems.append(
                    f"{rel}: requests that leave the machine "
                    f"(the site must render offline): {external}"
                )
            _screenshot(page, shots, rel)
        browser.close()
    assert not problems, "\n".join(problems)
    assert len(list(shots.glob("*.png"))) == len(_pages(html))


def test_phone_width(site):
    """At a 400 px viewport no claims table or display equation widens the page: each fits, or
    scrolls inside its own box. Chapter pages, the claims ledger and the claim standard are checked;
    their screenshots go to _build/screenshots/400px/."""
    executable = _chromium()
    playwright = pytest.importorskip("playwright.sync_api")
    html, base = site
    shots = ROOT / "_build" / "screenshots" / "400px"
    shots.mkdir(parents=True, exist_ok=True)
    pages = [
        rel
        for rel in _pages(html)
        if rel.startswith("notebooks/") or rel in ("book/claims.html", "book/claim-standard.html")
    ]
    assert pages
    problems = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 400, "height": 800})
        for rel in pages:
            page.goto(f"{base}/{rel}", wait_until="load")
            _wait_for_math(page)
            found = page.evaluate(OVERFLOW_JS)
            if found["wide"]:
                problems.append(f"{rel}: wider than the 400 px viewport: {found['wide']}")
            if found["page"] > found["viewport"] + 1:
                problems.append(
                    f"{rel}: the page scrolls sideways ({found['page']} px of {found['viewport']})"
                )
            _screenshot(page, shots, rel)
        browser.close()
    assert not problems, "\n".join(problems)
