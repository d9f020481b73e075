"""`facegan demo` runs end to end on the built-in data and its report shows every part, and
the report renders in a real browser (headless Chromium) with every image loaded."""
import json
import os
import re
import shutil
import subprocess

import pytest

from transfer.cli import main

ARGS = ["--num-identities", "12", "--images-per-identity", "2", "--gan-steps", "6", "--sr-steps", "8",
        "--attribute-steps", "12", "--transfer-steps", "6", "--no-progress"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    args = ["demo", "--out", str(out), *ARGS]
    assert main(args) == 0
    return out, args


def test_demo_writes_a_complete_report(demo, capsys):
    out, args = demo
    page = (out / "report.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert len(images) >= 3 and all((out / src).is_file() for src in images), images
    markdown = (out / "report.md").read_text()
    # The bundled real photo and its transformed copy are aligned; broken inputs are reported.
    assert "| astronaut.jpg | aligned |" in markdown and "| astronaut_rotated_shrunk.jpg | aligned |" in markdown
    assert "| broken_truncated.jpg | unreadable | truncated |" in markdown
    assert "| notes.txt | unreadable | not_an_image |" in markdown
    assert "NOT real data" in markdown
    # The SR section measures SR beside bicubic and shows strips; the attribute section grades.
    assert "Face super-resolution" in markdown and "psnr_y (higher is better)" in markdown
    assert any(src.endswith("strips.png") for src in images)
    assert "SA-softmax" in markdown and re.search(r"\| S \| \[[\d.]+, 1\.0\] \| \d+ \|", markdown), markdown
    assert any("risk_coverage" in src for src in images)
    assert "## 4. Face generator" in markdown and "gan/samples/samples_0000006.png" in markdown
    # The cross-domain section: every arm on both domains, and a link to the study's own report.
    assert "## 7. Cross-domain study: studio -> wild" in markdown and "| SR-mix |" in markdown
    assert "](transfer/report.html)" in markdown and (out / "transfer" / "report.html").is_file()
    assert "href='transfer/report.html'" in page
    # A second run reuses the synthetic data and the cache instead of redoing them.
    assert main(args) == 0
    assert str((out / "report.html").resolve()) in capsys.readouterr().out


def find_chromium() -> str | None:
    for name in (os.environ.get("FACEGAN_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


# Injected first into a copy of the page: records load errors of any resource and console
# errors, and after `load` writes what it saw into the DOM, which --dump-dom prints.
_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(e.message || ('failed to load ' + (e.target && (e.target.src || e.target.href)))), true);
const __consoleError = console.error;
console.error = function (...args) { window.__errors.push(args.join(' ')); __consoleError.apply(console, args); };
window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const pre = document.createElement('pre');
  pre.id = '__probe';
  pre.textContent = JSON.stringify({title: document.title, images: images.length, broken: broken, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>"""


def test_demo_report_renders_in_chromium(demo, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found (install Debian's `chromium` package, or set FACEGAN_CHROMIUM); .ci/run installs it")
    out, _ = demo
    page = (out / "report.html").read_text()
    probe = out / "_browser_probe.html"  # beside the report, so its relative image paths resolve the same
    probe.write_text(page.replace("<head>", "<head>" + _PROBE, 1))
    flags = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    try:
        dom = subprocess.run([*flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
    finally:
        probe.unlink()
    found = re.search(r'<pre id="__probe">(.*?)</pre>', dom, re.S)
    assert found, f"the page did not finish loading in Chromium; DOM: {dom[:500]}"
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert seen["title"] == "facegan demo"
    assert seen["images"] >= 3 and seen["broken"] == [], seen
    assert seen["errors"] == [], seen
    screenshot = out / "report_screenshot.png"
    subprocess.run([*flags, f"--screenshot={screenshot}", "--window-size=1280,3000", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
