"""The HTML report is one self-contained page, and headless Chromium shows the overlay image.

Chromium comes from the system (Debian/Ubuntu: ``apt-get install -y chromium``); the test fails
with that command in its message when the browser is missing - it is never skipped.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from test_narrate_runs import MNI_NAME, copy_run, mni_run
from xaiseg.narrate import ReportOptions, build_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    for name in (os.environ.get("XAISEG_CHROMIUM"),) + BROWSERS:
        if name and shutil.which(name):
            return shutil.which(name)
    raise AssertionError("headless Chromium is needed for the HTML report test; install it with "
                         "'apt-get update && apt-get install -y chromium' or set XAISEG_CHROMIUM")


def screenshot(html_path: Path, png_path: Path, width: int = 1200, height: int = 1800) -> np.ndarray:
    """Render ``html_path`` in headless Chromium at device scale 1 and return the screenshot (RGB)."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--force-device-scale-factor=1", "--disable-extensions", "--no-first-run",
           "--user-data-dir=" + str(png_path.parent / "chromium-profile"),
           f"--window-size={width},{height}", f"--screenshot={png_path}", html_path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png_path.is_file(), f"Chromium wrote no screenshot (status {proc.returncode}): {proc.stderr[-800:]}"
    return np.asarray(Image.open(png_path).convert("RGB"))


def find_image(haystack: np.ndarray, needle: np.ndarray) -> float:
    """Best normalised correlation of ``needle`` anywhere in ``haystack`` (1.0: pixel-exact)."""
    import cv2

    res = cv2.matchTemplate(cv2.cvtColor(haystack, cv2.COLOR_RGB2BGR), cv2.cvtColor(needle, cv2.COLOR_RGB2BGR),
                            cv2.TM_CCOEFF_NORMED)
    return float(res.max())


def build_mni_report(folder: Path):
    run = copy_run(mni_run(), folder / "run")
    paths = build_report(run, ReportOptions(atlas="harvard-oxford"))
    return run, paths


def test_html_is_self_contained(tmp_path):
    run, paths = build_mni_report(tmp_path)
    page = paths["html"].read_text()
    assert page.startswith("<!DOCTYPE html>")
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs), refs
    assert "<script" not in page and "@import" not in page and "url(" not in page
    # the overlay PNG is inlined byte for byte (re-encoded from its pixels)
    data = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1))
    findings = json.loads(paths["findings"].read_text())
    k = findings["explained_slices"][0]
    original = np.asarray(Image.open(run / f"{MNI_NAME}_occlusion_k{k:03d}.png").convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), original)
    # metrics table, narrative, limits and run record are on the page
    occ = findings["methods"]["occlusion"]
    assert 'id="metrics"' in page and f"{occ['summary']['deletion_auc']:.3f}" in page
    assert f"{findings['mask']['volume_ml']:.2f} mL" in page and "Left_Caudate" in page
    assert "<h2>Limits</h2>" in page and "weights_sha256" in page
    # the JSON report holds the same narrative and names the images
    report = json.loads(paths["report_json"].read_text())
    assert report["narrative"]["narrator"] == "template" and report["narrative"]["unsupported"] == []
    assert report["images"][0]["file"] == f"{MNI_NAME}_occlusion_k{k:03d}.png"


def test_chromium_screenshot_shows_the_overlay(tmp_path):
    run, paths = build_mni_report(tmp_path)
    shot = screenshot(paths["html"], tmp_path / "shot.png")
    assert shot.shape[0] >= 1000 and shot.shape[1] >= 1000
    assert shot.std() > 20, "the screenshot is blank"
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 200, "the screenshot has too few colours to hold an image"
    findings = json.loads(paths["findings"].read_text())
    k = findings["explained_slices"][0]
    overlay = np.asarray(Image.open(run / f"{MNI_NAME}_occlusion_k{k:03d}.png").convert("RGB"))
    assert overlay.shape[1] < 1100, "the overlay must fit the page unscaled for this check"
    score = find_image(shot, overlay)
    assert score > 0.98, f"the overlay image is not visible in the screenshot (best match {score:.3f})"
    # the saliency colours (warm hues of the heat map) are on screen
    r, g, b = (shot[..., i].astype(int) for i in range(3))
    assert ((r > 180) & (b < 100) & (r - b > 120)).sum() > 100
    if os.environ.get("XAISEG_UPDATE_DOCS"):
        dest = Path(__file__).resolve().parents[2] / "docs" / "images" / "report_screenshot.png"
        shutil.copyfile(tmp_path / "shot.png", dest)
