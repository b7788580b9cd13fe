"""The Sphinx docs build clean, every page's checks ran, plots were drawn by rope_ref at build
time, and the built pages are self-contained: math renders in headless Chromium with every
host name unresolvable, and each page loads only files from inside the build.

The build runs once per session in a temporary folder (``sphinx-build -W --keep-going``, the
same command as ``tox -e docs``). The browser checks need Debian's ``chromium``; without it they
are skipped with that reason (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")

DOCS = ROOT / "docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGES_WITH_MATH = [
    "formulation", "scaling/index", "scaling/yarn", "precision", "accuracy", "attention",
]


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs") / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )
    return out, proc


def test_build_is_clean(built):
    _, proc = built
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "WARNING" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr[-6000:]


def test_every_page_check_ran(built):
    out, _ = built
    record = json.loads((out / "_checks.json").read_text())
    assert record["total"]["failed"] == 0
    # every .md page that has python blocks was executed during the build
    pages = {str(p.relative_to(DOCS).with_suffix("")) for p in DOCS.rglob("*.md")
             if "_build" not in p.parts and "```python\n" in p.read_text()}
    assert pages == set(record["pages"])
    assert record["total"]["asserts"] >= 60


def test_plots_are_drawn_at_build_time(built):
    out, _ = built
    pngs = [p for p in out.rglob("*.png") if "_static" not in p.parts]
    assert pngs, "no plot was produced"
    committed = [p for p in DOCS.rglob("*.png") if "_build" not in p.parts]
    assert not committed, f"images are committed instead of drawn: {committed}"
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


class _Loads(HTMLParser):
    """Every URL a page would fetch on load: scripts, stylesheets, images, frames, media."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        loads = {"script", "img", "iframe", "source", "video", "audio", "embed"}
        if tag in loads and a.get("src"):
            self.urls.append(a["src"])
        if tag == "link" and a.get("href") and (a.get("rel") or "") not in {"index", "search",
                                                                              "next", "prev"}:
            self.urls.append(a["href"])


EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)


def test_no_page_loads_anything_from_outside(built):
    out, _ = built
    pages = sorted(out.rglob("*.html"))
    assert len(pages) > 20
    for page in pages:
        parser = _Loads()
        parser.feed(page.read_text())
        bad = [u for u in parser.urls if EXTERNAL.match(u) or u.startswith("data:text/html")]
        assert not bad, f"{page.relative_to(out)} loads {bad}"
    for css in out.rglob("*.css"):
        bad = re.findall(r"(?:url\(|@import)\s*['\"]?((?:https?:)?//[^'\")\s]+)", css.read_text())
        assert not bad, f"{css.relative_to(out)} loads {bad}"
    # the MathJax the pages use is the bundled copy
    head = (out / "formulation.html").read_text()
    assert re.search(r'<script[^>]+src="_static/mathjax/tex-chtml\.js', head)


PROBE = """
<pre id="rr-probe">pending</pre>
<script>
window.addEventListener("load", function () {
  function report() {
    var names = performance.getEntriesByType("resource").map(function (e) { return e.name; });
    var box = document.getElementById("rr-probe");
    box.textContent = JSON.stringify({
      resources: names,
      containers: document.querySelectorAll("mjx-container").length,
      errors: document.querySelectorAll("mjx-merror, [data-mjx-error]").length,
      math: document.querySelectorAll(".math").length
    });
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(report, report);
  } else { setTimeout(report, 3000); }
});
</script>
"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--virtual-time-budget=15000", "--hide-scrollbars"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed")
@pytest.mark.parametrize("page", PAGES_WITH_MATH)
def test_math_renders_offline_in_chromium(built, page, tmp_path):
    out, proc = built
    assert proc.returncode == 0
    site = tmp_path / "site"
    shutil.copytree(out, site)
    html = site / f"{page}.html"
    probe = html.with_name(html.stem + "_probe.html")
    probe.write_text(html.read_text().replace("</body>", PROBE + "</body>"))

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        dom = _chromium(["--dump-dom", base + f"{page}_probe.html"], tmp_path / "profile1")
        shot = tmp_path / "page.png"
        _chromium([f"--screenshot={shot}", "--window-size=1100,1400", base + f"{page}.html"],
                  tmp_path / "profile2")
    finally:
        server.shutdown()
        server.server_close()
    found = re.search(r'<pre id="rr-probe">(.*?)</pre>', dom.stdout, flags=re.S)
    assert found, dom.stderr[-3000:]
    report = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert report["math"] > 0
    assert report["containers"] >= report["math"], report  # every math node typeset
    assert report["errors"] == 0, report
    outside = [u for u in report["resources"] if not u.startswith(base)]
    assert not outside, f"{page} fetched from outside the build: {outside}"
    assert any("/_static/mathjax/" in u for u in report["resources"]), report
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
