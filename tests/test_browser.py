"""Every page of the built site in headless Chromium (Debian's, driven by Playwright): no uncaught
JavaScript error, no request leaves the machine, MathJax typeset the math, every image loaded, no
Python traceback, and a claims table on every chapter page. Screenshots go to
_build/screenshots/."""

import functools
import http.server
import os
import re
import shutil
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


def _pages(html):
    skip = ("_static", "_sources", "_downloads", "_images")
    return sorted(
        p.relative_to(html).as_posix()
        for p in html.rglob("*.html")
        if p.relative_to(html).parts[0] not in skip
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
            has_math = page.evaluate(
                "document.querySelector('.math, .MathJax, mjx-container, span.math') !== null"
            )
            if has_math:
                page.wait_for_function(
                    "window.MathJax && MathJax.startup && MathJax.startup.document", timeout=20000
                )
                page.evaluate("MathJax.startup.promise")
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
            if rel.startswith("notebooks/") and page.query_selector("table.lmbook-claims") is None:
                problems.append(f"{rel}: no claims table")
            if errors:
                problems.append(f"{rel}: uncaught JavaScript errors: {errors}")
            if external:
                problems.append(
                    f"{rel}: requests that leave the machine "
                    f"(the site must render offline): {external}"
                )
            page.screenshot(
                path=str(shots / (rel.replace("/", "__").removesuffix(".html") + ".png")),
                full_page=True,
            )
        browser.close()
    assert not problems, "\n".join(problems)
    assert len(list(shots.glob("*.png"))) == len(_pages(html))
