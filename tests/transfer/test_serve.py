"""`facegan serve`: what its pages compute (transfer.app.work), and the page itself driven in the
system Chromium by Playwright: faces, grades, heat maps, super-resolution and generation from
small models made here, bad uploads answered in the page, two browsers at once, nothing loaded
from outside the machine. Screenshots go to runs/test-artifacts/."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from data_prep.assets import ASTRONAUT_JPG
from engine.errors import FaceganError
from transfer.app import work

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests" / "fixtures" / "legacy"
ARTIFACTS = ROOT / "runs" / "test-artifacts"
SR = LEGACY / "sr_run" / "checkpoints" / "latest.pt"


@pytest.fixture(scope="module")
def models(sa_ensemble_checkpoint, began_checkpoint) -> work.ServedModels:
    return work.load_served_models(sa_ensemble_checkpoint, SR, began_checkpoint)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    from tests.fuzzing import decompression_bomb

    folder = tmp_path_factory.mktemp("bad")
    files = {"text": folder / "notes.txt", "truncated": folder / "cut.jpg", "bomb": folder / "bomb.png",
             "no_face": folder / "card.png", "huge": folder / "huge.jpg"}
    files["text"].write_text("not an image\n")
    files["huge"].write_bytes(ASTRONAUT_JPG.read_bytes() + bytes(6_000_000))  # 6 MB: past the server's 5 MB cap
    files["truncated"].write_bytes(ASTRONAUT_JPG.read_bytes()[:4000])
    files["bomb"].write_bytes(decompression_bomb(20_000))  # 20,000 x 20,000 pixels, ~1 MB on disk
    from PIL import Image

    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(files["no_face"])
    return files


def test_a_photo_gives_every_face_with_each_task_graded_and_a_heat_map(models):
    tasks = work.task_names(models)
    result = work.analyse_photo(models, ASTRONAUT_JPG, tasks[1], all_faces=True)
    assert len(result.faces) == 1 and result.faces[0].shape == (64, 64, 3)
    assert [row[1] for row in result.rows if row[0] == 1] and len(result.rows) == len(tasks)
    graded = [row for row in result.rows if row[3] is not None]
    assert graded and all(row[4] in "SABCD" and 0 <= row[3] <= 1 for row in graded)
    assert [row[3] for row in graded] == sorted((row[3] for row in graded), reverse=True)  # most trusted first
    assert result.overlays[0].shape == (64, 64, 3) and f"Grad-CAM of {tasks[1]} from the first" in result.message
    assert result.annotated.shape == (512, 512, 3)
    assert not np.array_equal(result.annotated, np.asarray(__import__("PIL.Image").Image.open(ASTRONAUT_JPG)))


def test_a_single_network_explains_itself(tmp_path):
    single = work.load_served_models(LEGACY / "attributes_run" / "checkpoints" / "latest.pt")
    result = work.analyse_photo(single, ASTRONAUT_JPG, "Smiling")
    assert result.message == "1 face found; Grad-CAM of Smiling"
    assert len(result.rows) == len(work.task_names(single))


def test_all_faces_finds_both_faces_of_a_two_face_photo(models, tmp_path):
    from PIL import Image

    face = Image.open(ASTRONAUT_JPG).convert("RGB")
    canvas = Image.new("RGB", (1100, 600), (90, 90, 90))
    canvas.paste(face, (0, 0))
    canvas.paste(face.resize((256, 256)), (620, 150))
    canvas.save(tmp_path / "two.png")
    both = work.analyse_photo(models, tmp_path / "two.png", None, all_faces=True)
    one = work.analyse_photo(models, tmp_path / "two.png", None, all_faces=False)
    assert len(both.faces) == 2 and len(one.faces) == 1
    assert {row[0] for row in both.rows} == {1, 2}


@pytest.mark.parametrize("kind, says", [("text", "is not an image"), ("truncated", "cut short"),
                                        ("bomb", "too many pixels"), ("no_face", "no face found")])
def test_bad_uploads_get_a_message(models, bad_files, kind, says):
    with pytest.raises(FaceganError, match=says):
        work.analyse_photo(models, bad_files[kind], None)


def test_uploads_over_the_cap_are_refused_before_decoding(models):
    with pytest.raises(FaceganError, match="takes files up to"):
        work.read_upload(ASTRONAUT_JPG, max_bytes=1000)


def test_super_resolution_shows_bicubic_beside_the_model(models, bad_files):
    sr = models.sr
    result = work.super_resolve_photo(models, ASTRONAUT_JPG)
    assert result.aligned.shape == result.bicubic.shape == result.super_resolved.shape == (sr.output_size, sr.output_size, 3)
    assert result.low_resolution.shape == (sr.input_size, sr.input_size, 3)
    assert not np.array_equal(result.bicubic, result.super_resolved)
    small = work.super_resolve_photo(models, ASTRONAUT_JPG, already_aligned=True)
    assert small.super_resolved.shape == (sr.output_size, sr.output_size, 3)
    with pytest.raises(FaceganError, match="already aligned"):
        work.super_resolve_photo(models, bad_files["no_face"])


def test_generation_is_reproducible_from_a_seed(models):
    size = models.gan.config.image_size
    grid = work.generate_grid(models, seed=3, count=4)
    assert grid.shape == (size + 4, 4 * (size + 2) + 2, 3)
    assert np.array_equal(grid, work.generate_grid(models, seed=3, count=4))
    assert not np.array_equal(grid, work.generate_grid(models, seed=4, count=4))
    strip = work.slerp_strip(models, 1, 2, steps=5)
    assert strip.shape == (size + 4, 5 * (size + 2) + 2, 3)
    with pytest.raises(FaceganError, match="between 1 and 64"):
        work.generate_grid(models, seed=0, count=500)


def test_without_models_it_says_to_run_the_demo(tmp_path):
    with pytest.raises(FaceganError, match="run `facegan demo"):
        work.load_served_models(demo_dir=tmp_path)


def test_models_trained_on_synthetic_faces_are_flagged(models):
    assert models.synthetic == {"attributes": True, "sr": True, "gan": True}


# ------------------------------------------------------------------------------------- the browser
def _chromium() -> str | None:
    for name in (os.environ.get("FACEGAN_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(sa_ensemble_checkpoint, began_checkpoint, tmp_path_factory):
    pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'facegan[app]'")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    env = {**os.environ, "FACEGAN_THREADS": "1"}
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "transfer.cli", "serve", "--attributes", str(sa_ensemble_checkpoint),
                                    "--sr", str(SR), "--gan", str(began_checkpoint), "--port", str(port), "--max-upload-mb", "5"],
                                   stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while not _answers(url):
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            pytest.fail(f"facegan serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    yield url, process, log
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


_IMAGES_LOADED = """() => [...document.images].filter(i => i.offsetParent !== null)
                          .map(i => ({src: i.src.slice(0, 80), ok: i.complete && i.naturalWidth > 0}))"""


def _wait_for_text(page, selector: str, text: str, timeout: float = 90_000) -> None:
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
                           arg=[selector, text], timeout=timeout)


def _wait_for_images(page, seconds: float = 20) -> list[dict]:
    """The page's visible images once every one has loaded; fails naming those that did not."""
    deadline = time.time() + seconds
    while True:
        page.wait_for_load_state("networkidle")
        images = page.evaluate(_IMAGES_LOADED)
        if all(i["ok"] for i in images) or time.time() > deadline:
            assert all(i["ok"] for i in images), [i for i in images if not i["ok"]]
            return images
        page.wait_for_timeout(250)


def _upload(page, component: str, path: Path) -> None:
    """Put a file into a Gradio File component, replacing the one it holds."""
    clear = page.locator(f"{component} button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.set_input_files(f"{component} input[type=file]", str(path))
    page.wait_for_timeout(800)  # the upload itself, before the button may use it


_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
          "--disable-component-update", "--no-first-run"]


def _open_chromium(playwright, chromium: str, folder: Path):
    """(browser, process): Playwright launches the system Chromium by its path; when this Playwright
    cannot drive that Chromium's version, it connects over CDP to one started here instead."""
    try:
        return playwright.chromium.launch(executable_path=chromium, args=_FLAGS), None
    except Exception as launch_error:  # playwright's Error: version mismatch, missing libraries
        profile = folder / "chromium-profile"
        process = subprocess.Popen([chromium, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                    *_FLAGS, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 30
        while not port_file.is_file() and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
        if not port_file.is_file():
            process.kill()
            raise AssertionError(f"Playwright cannot launch {chromium} ({launch_error}) and it did not start "
                                 "with --remote-debugging-port either") from launch_error
        port = port_file.read_text().split()[0]
        return playwright.chromium.connect_over_cdp(f"http://127.0.0.1:{port}"), process


def test_the_page_in_chromium(server, bad_files, models, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium found (install Debian's `chromium` package, or set FACEGAN_CHROMIUM); .ci/run installs it")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")
    url, process, log = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    expected_tasks = work.task_names(models)
    with playwright_api.sync_playwright() as playwright:
        browser, cdp_process = _open_chromium(playwright, chromium, tmp_path)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1400})
            context.on("request", lambda request: requests.append(request.url))
            page = context.new_page()
            page.goto(url, wait_until="networkidle")
            assert "synthetic cartoon faces" in page.inner_text("#banner")

            # Faces: the bundled astronaut gives a row per task, every image in the page loads.
            page.click("#faces-astronaut")
            _wait_for_text(page, "#faces-status", "1 face found")
            page.wait_for_timeout(500)
            rows = page.evaluate("""() => [...document.querySelectorAll('#faces-table [role=row]')]
                                     .filter(r => Number(r.getAttribute('aria-rowindex')) > 1)
                                     .map(r => r.innerText.replace(/\\s+/g, ' ').trim())""")
            assert len(rows) == len(expected_tasks), rows
            assert sorted(row.split(" ")[1] for row in rows) == sorted(expected_tasks)
            assert any(grade in page.inner_text("#faces-table") for grade in "SABCD")
            assert len(_wait_for_images(page)) >= 3
            page.screenshot(path=str(ARTIFACTS / "serve_faces.png"), full_page=True)

            # A text file: a message in the page, and the server goes on.
            _upload(page, "#faces-upload", bad_files["text"])
            page.click("#faces-run")
            page.wait_for_selector("text=is not an image", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "serve_bad_upload.png"), full_page=True)
            assert process.poll() is None and _answers(url)
            # A 20,000 x 20,000 decompression bomb is refused before decoding; a file past the
            # upload cap (5 MB here) never reaches the models.
            _upload(page, "#faces-upload", bad_files["bomb"])
            page.click("#faces-run")
            page.wait_for_selector("text=too many pixels", timeout=60_000)
            _upload(page, "#faces-upload", bad_files["huge"])
            page.wait_for_selector("text=exceed", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "serve_too_large.png"), full_page=True)
            assert process.poll() is None and _answers(url)

            # Super-resolve: an uploaded photo, aligned, bicubic beside SR.
            page.get_by_role("tab", name="Super-resolve").click()
            _upload(page, "#sr-upload", ASTRONAUT_JPG)
            page.click("#sr-run")
            _wait_for_text(page, "#sr-status", "by the model")
            _wait_for_images(page)
            page.screenshot(path=str(ARTIFACTS / "serve_sr.png"), full_page=True)

            # Generate, from two browser sessions at once: both get their faces.
            second = context.browser.new_context(viewport={"width": 1280, "height": 1000})
            second.on("request", lambda request: requests.append(request.url))
            other = second.new_page()
            other.goto(url, wait_until="networkidle")
            for tab in (page, other):
                tab.get_by_role("tab", name="Generate").click()
            for tab in (page, other):
                tab.click("#gan-run")
            for tab in (page, other):
                tab.wait_for_selector("#gan-grid img", timeout=60_000)
                _wait_for_images(tab)
            page.click("#gan-slerp")
            page.wait_for_selector("#gan-strip img", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "serve_generate.png"), full_page=True)
            second.close()
        finally:
            browser.close()
            if cdp_process is not None:
                cdp_process.kill()
    assert process.poll() is None and _answers(url), log.read_text()[-2000:]
    outside = sorted({r for r in requests if not r.startswith(url) and not r.startswith(("data:", "blob:"))})
    assert requests and outside == [], f"the page loaded from outside the server: {outside[:10]}"
