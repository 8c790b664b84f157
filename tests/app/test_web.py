"""The page in a real browser: Playwright drives Debian's Chromium against the server on 127.0.0.1.

Marked ``browser`` (deselect with ``-m "not browser"``); skipped, with the reason, only when no
Chromium binary exists (CI installs it: .ci/run). Waits are for elements, never sleeps. Screenshots go
to ``$FRACTURELIB_SCREENSHOTS`` when set, else to the test session's temporary folder.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import pytest

from tests.app.conftest import fracatlas_images

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and os.path.exists(p)), None)
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (/usr/bin/chromium): "
                                 "apt-get install -y chromium (CI's .ci/run does)")]
WAIT = 120_000        # ms: a loaded 2-core CI machine, first prediction loads the model


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = Path(os.environ.get("FRACTURELIB_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def web(chromium, server):
    ctx = chromium.new_context(viewport={"width": 1280, "height": 1100}, accept_downloads=True)
    ctx.set_default_timeout(WAIT)
    pg = ctx.new_page()
    pg.goto(server + "/", wait_until="domcontentloaded")
    pg.locator("#upload").wait_for()
    yield pg
    ctx.close()


def _upload(web, paths):
    web.locator("#upload input[type=file]").set_input_files([str(p) for p in paths])


def _clear(web):
    """Empty the upload box (the × of the File component) so the next upload stands alone."""
    web.locator("#upload button[aria-label='Clear']").first.click()
    web.locator("#upload input[type=file]").wait_for(state="attached")


def test_a_radiograph_gets_a_decision_probability_and_overlay(web, shots):
    expect = _expect()
    assert "Research tool, not a medical device" in web.locator("#research-note").inner_text()
    _upload(web, fracatlas_images(1))
    expect(web.locator("#fl-decision")).to_contain_text("Decision:", timeout=WAIT)
    expect(web.locator("#fl-probability")).to_contain_text("Probability of fractured:")
    expect(web.locator("#fl-threshold")).to_contain_text("sensitivity 0.910 (95% CI 0.840-0.970)")
    expect(web.locator("#fl-threshold")).to_contain_text("specificity 0.550")
    img = web.locator("#overlay img")
    expect(img).to_be_visible(timeout=WAIT)
    assert web.evaluate("(el) => el.complete && el.naturalWidth > 0", img.element_handle())
    web.screenshot(path=str(shots / "web_app.png"), full_page=True)


def test_a_photo_gets_the_warning_and_no_decision(web, china_jpg, shots):
    expect = _expect()
    _upload(web, [china_jpg])
    expect(web.locator("#fl-not-radiograph")).to_contain_text("does not look like the radiographs", timeout=WAIT)
    expect(web.locator("#fl-decision")).to_have_count(0)
    web.screenshot(path=str(shots / "web_app_photo.png"), full_page=True)


def test_a_bad_file_is_a_readable_error_and_the_next_upload_works(web, tmp_path, shots):
    expect = _expect()
    fake = tmp_path / "notes.png"
    fake.write_text("this is a text file, not a PNG\n")
    _upload(web, [fake])
    expect(web.locator("#fl-error")).to_contain_text("notes.png", timeout=WAIT)
    expect(web.locator("#fl-error")).to_contain_text("not an image")
    web.screenshot(path=str(shots / "web_app_error.png"), full_page=True)
    _clear(web)
    _upload(web, fracatlas_images(1))
    expect(web.locator("#fl-decision")).to_contain_text("Decision:", timeout=WAIT)
    expect(web.locator("#fl-error")).to_have_count(0)


def test_three_files_give_three_rows_and_a_csv(web, tmp_path, shots):
    expect = _expect()
    images = fracatlas_images(3)
    _upload(web, images)
    # the data frame is a virtual table: its grid says how many rows it holds (the header and one per file)
    expect(web.locator("#table [role=grid]")).to_have_attribute("aria-rowcount", "4", timeout=WAIT)
    for img in images:
        expect(web.locator("#table")).to_contain_text(img.name)
    link = web.locator("#csv a").first
    expect(link).to_be_visible(timeout=WAIT)
    with web.expect_download() as dl:
        link.click()
    text = Path(dl.value.path()).read_text()
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["file"] for r in table] == [p.name for p in images]
    assert all(r["decision"] in ("fractured", "non-fractured") and r["error"] == "" for r in table)
    web.screenshot(path=str(shots / "web_app_table.png"), full_page=True)


def _expect():
    from playwright.sync_api import expect
    return expect
