"""The built docs site: clean build, every page's checks ran, plots drawn at build time, every
internal link resolves, nothing is loaded from outside, and in headless Chromium the math is
typeset, the plots are displayed and the navigation is there.

These tests carry the ``docs`` marker, left out of the default run. They check the site that
``sphinx-build`` wrote to ``ROPE_REF_DOCS_HTML`` (``tox -e docs`` and the docs step of
``.ci/run`` build once, then run ``pytest -m docs`` on that build); without that variable they
build the site once into a temporary folder (``sphinx-build -W --keep-going``). The browser
checks need Debian's ``chromium`` (``.ci/run`` installs it); without it they are skipped with
that reason. ``ROPE_REF_SCREENSHOTS=DIR`` keeps the screenshots taken, one PNG per page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from _helpers import ROOT

pytestmark = pytest.mark.docs

DOCS = ROOT / "docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# every page with math, and the four a reader meets first: the landing page, a schedule with
# its plot, the formulation and one API page
PAGES_WITH_MATH = [
    "index",
    "formulation",
    "scaling/index",
    "scaling/yarn",
    "precision",
    "accuracy",
    "attention",
]
BROWSER_PAGES = [*PAGES_WITH_MATH, "generated/rope_ref.apply_rope", "api"]
# the entries of the landing page's toctree: the sections of the top navigation bar
SECTIONS = [
    line
    for body in re.findall(r"```\{toctree\}\n(.*?)```", (DOCS / "index.md").read_text(), re.S)
    for line in body.split("\n")
    if line.strip() and not line.startswith(":")
]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess | None]:
    given = os.environ.get("ROPE_REF_DOCS_HTML")
    if given:
        out = Path(given).resolve()
        assert (out / "index.html").exists(), f"ROPE_REF_DOCS_HTML={given}: no built site there"
        return out, None
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    out = tmp_path_factory.mktemp("docs") / "html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
    )
    return out, proc


def test_build_is_clean(built):
    out, proc = built
    if proc is None:  # built by the caller with sphinx-build -W: it would have stopped
        assert (out / "_checks.json").exists()
        return
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "WARNING" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr[-6000:]


def test_every_page_check_ran(built):
    out, _ = built
    record = json.loads((out / "_checks.json").read_text())
    assert not record.get("skipped"), "built with RR_CHECKS_SKIP: the pages' blocks did not run"
    assert record["total"]["failed"] == 0
    # every .md page that has python blocks was executed during the build
    pages = {
        str(p.relative_to(DOCS).with_suffix(""))
        for p in DOCS.rglob("*.md")
        if "_build" not in p.parts and "```python\n" in p.read_text()
    }
    assert pages == set(record["pages"])
    assert all(r["blocks"] > 0 for r in record["pages"].values())
    assert record["total"]["asserts"] >= 60


def test_plots_are_drawn_at_build_time(built):
    out, _ = built
    pngs = [p for p in out.rglob("*.png") if "_static" not in p.parts]
    assert pngs, "no plot was produced"
    committed = [p for p in DOCS.rglob("*.png") if "_build" not in p.parts]
    assert not committed, f"images are committed instead of drawn: {committed}"
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


class _Links(HTMLParser):
    """Every URL a page would fetch on load (scripts, stylesheets, images, frames, media), and
    every link a reader can follow."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        loads = {"script", "img", "iframe", "source", "video", "audio", "embed"}
        if tag in loads and a.get("src"):
            self.loads.append(a["src"])
        if tag == "link" and a.get("href"):
            if (a.get("rel") or "") in {"index", "search", "next", "prev"}:
                self.links.append(a["href"])
            else:
                self.loads.append(a["href"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])


EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text())
    return parser


def test_no_page_loads_anything_from_outside(built):
    out, _ = built
    pages = sorted(out.rglob("*.html"))
    assert len(pages) > 20
    for page in pages:
        bad = [u for u in _parse(page).loads if EXTERNAL.match(u) or u.startswith("data:text/html")]
        assert not bad, f"{page.relative_to(out)} loads {bad}"
    for css in out.rglob("*.css"):
        bad = re.findall(r"(?:url\(|@import)\s*['\"]?((?:https?:)?//[^'\")\s]+)", css.read_text())
        assert not bad, f"{css.relative_to(out)} loads {bad}"
    # the MathJax the pages use is the bundled copy
    head = (out / "formulation.html").read_text()
    assert re.search(r'<script[^>]+src="_static/mathjax/tex-chtml\.js', head)


def test_every_internal_link_resolves(built):
    """Navigation bar, sidebars, toctrees, cross-references: every link inside the site names
    a file of the build (and an anchor that exists, for links between pages)."""
    out, _ = built
    ids: dict[Path, set[str]] = {}

    def anchors(path: Path) -> set[str]:
        if path not in ids:
            ids[path] = set(re.findall(r'\sid="([^"]+)"', path.read_text()))
        return ids[path]

    broken = []
    checked = 0
    for page in sorted(out.rglob("*.html")):
        for href in _parse(page).links:
            if EXTERNAL.match(href) or href.startswith(("mailto:", "javascript:", "data:")):
                continue
            parts = urlsplit(href)
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.exists():
                broken.append(f"{page.relative_to(out)} -> {href}")
            elif (
                parts.fragment
                and target.suffix == ".html"
                and target != page
                and unquote(parts.fragment) not in anchors(target)
            ):
                broken.append(f"{page.relative_to(out)} -> {href} (no such anchor)")
    assert checked > 500
    assert not broken, "\n".join(broken[:40])


def test_outside_links_point_at_the_real_sites(built):
    """intersphinx links (from the inventories in docs/_intersphinx) go to Python, NumPy and
    the Array API standard, and at least one of each is used."""
    out, _ = built
    hosts: set[str] = set()
    for page in out.rglob("*.html"):
        for href in _parse(page).links:
            if EXTERNAL.match(href):
                hosts.add(urlsplit(href).netloc)
    assert {"docs.python.org", "numpy.org", "data-apis.org"} <= hosts, hosts


PROBE = """
<pre id="rr-probe">pending</pre>
<script>
window.addEventListener("load", function () {
  function report() {
    var names = performance.getEntriesByType("resource").map(function (e) { return e.name; });
    var imgs = Array.prototype.slice.call(document.querySelectorAll("article img"));
    var nav = document.querySelectorAll(".bd-header a.nav-link[href]");
    var side = document.querySelectorAll(".bd-sidebar-primary a[href], .bd-toc a[href]");
    var box = document.getElementById("rr-probe");
    box.textContent = JSON.stringify({
      resources: names,
      containers: document.querySelectorAll("mjx-container").length,
      errors: document.querySelectorAll("mjx-merror, [data-mjx-error]").length,
      math: document.querySelectorAll(".math").length,
      images: imgs.length,
      images_shown: imgs.filter(function (i) {
        return i.complete && i.naturalWidth > 100 && i.getBoundingClientRect().width > 100;
      }).length,
      nav_links: nav.length,
      side_links: side.length,
      title: document.title,
      h1: (document.querySelector("article h1") || {}).textContent || ""
    });
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(report, report);
  } else { setTimeout(report, 3000); }
});
</script>
"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        "--hide-scrollbars",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def served(built, tmp_path_factory):
    """A copy of the site on a local HTTP server, with a probe page beside each checked page."""
    out, proc = built
    assert proc is None or proc.returncode == 0
    site = tmp_path_factory.mktemp("site") / "html"
    shutil.copytree(out, site)
    for page in BROWSER_PAGES:
        html = site / f"{page}.html"
        probe = html.with_name(html.stem + "_probe.html")
        probe.write_text(html.read_text().replace("</body>", PROBE + "</body>"))

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed")
@pytest.mark.parametrize("page", BROWSER_PAGES)
def test_page_in_chromium(served, page, tmp_path):
    """Math typeset with no error, every plot displayed, navigation bar and sidebars present,
    nothing fetched from outside, and a screenshot that is not blank."""
    base = served
    dom = _chromium(["--dump-dom", base + f"{page}_probe.html"], tmp_path / "profile1")
    shot = tmp_path / "page.png"
    _chromium(
        [f"--screenshot={shot}", "--window-size=1280,2000", base + f"{page}.html"],
        tmp_path / "profile2",
    )
    # (the theme's script adds attributes such as tabindex to every <pre>)
    found = re.search(r'<pre id="rr-probe"[^>]*>(.*?)</pre>', dom.stdout, flags=re.S)
    assert found, dom.stderr[-3000:]
    report = json.loads(
        found.group(1)
        .replace("&quot;", '"')
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
    )
    outside = [u for u in report["resources"] if not u.startswith(base)]
    assert not outside, f"{page} fetched from outside the build: {outside}"
    assert report["h1"].strip(), report  # the page has its title
    assert report["nav_links"] >= len(SECTIONS), report  # the top bar lists every section
    if page != "index":
        assert report["side_links"] >= 1, report
    if page in PAGES_WITH_MATH:
        assert report["math"] > 0
        assert report["containers"] >= report["math"], report  # every math node typeset
        assert report["errors"] == 0, report
        assert any("/_static/mathjax/" in u for u in report["resources"]), report
    if page == "scaling/yarn":
        assert report["images"] >= 1, report
    assert report["images_shown"] == report["images"], report  # every plot loaded and shown
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    keep = os.environ.get("ROPE_REF_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / (page.replace("/", "-") + ".png"))
