"""The report's pages in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium): no console error, no request outside the report's folder, a viewer that draws, reacts
to its controls, names the voxel under the cursor as the NIfTI file does, and shows the patient's
sides where the labels say; the index of a 5,000-case run opens and filters.

Set XAIMED_REPORT_SCREENSHOTS=DIR to keep a screenshot of each page there (the README's).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from report_fixtures import sample_run_fixture  # noqa: F401

from xaimed.report import build_report

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if os.environ.get("XAIMED_REQUIRE_BROWSER") and (CHROMIUM is None or DRIVER is None):
    raise RuntimeError("XAIMED_REQUIRE_BROWSER is set but chromium or chromedriver is missing.")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="no chromium / chromedriver on this machine (Debian: apt-get install chromium "
    "chromium-driver; .ci/run installs them)",
)

# The machine's network is closed and the report must not need it: nothing in the background.
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions",
    # WebGL 2 without a GPU: ANGLE on SwiftShader, the software renderer shipped with Chromium.
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--window-size=1400,1000", "--force-device-scale-factor=1",
)  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="xaimed-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_page(driver: webdriver.Chrome, url: str, timeout: float = 30) -> None:
    """Load ``url`` (after clearing the logs) and wait until the page says it is ready."""
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(url)
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.body && document.body.dataset.ready")
    )
    assert driver.execute_script("return document.body.dataset.ready") == "1", driver.find_element(
        "tag name", "body"
    ).text[:500]


def check_logs(driver: webdriver.Chrome, report: Path) -> list[str]:
    """Assert no console error and no request outside ``report``; return the URLs requested."""
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    inside = report.resolve().as_uri() + "/"
    # data: and blob: are in memory; chrome:// and about: are the browser's own pages.
    outside = [
        u for u in urls
        if not u.startswith((inside, "data:", "blob:", "chrome://", "about:"))
    ]  # fmt: skip
    assert outside == []
    assert any(u.startswith(inside) for u in urls)
    return urls


def canvas_pixels(driver: webdriver.Chrome) -> np.ndarray:
    from PIL import Image

    png = driver.find_element("id", "gl").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


def wait_drawn(driver: webdriver.Chrome) -> None:
    # Two animation frames: NiiVue draws on the next frame after a change.
    driver.execute_async_script(
        "const done = arguments[0];"
        "requestAnimationFrame(() => requestAnimationFrame(() => done()));"
    )


def tile(driver: webdriver.Chrome, plane: int) -> tuple[float, float, float, float]:
    """(left, top, width, height) in CSS pixels of a plane of the viewer (0 axial, 1 coronal,
    2 sagittal), from the viewer's own layout."""
    return tuple(
        driver.execute_script(
            "const nv = XAIMED_VIEWER.nv, r = window.devicePixelRatio || 1;"
            "const s = nv.screenSlices.find((t) => t.axCorSag === arguments[0]);"
            "return s.leftTopWidthHeight.map((v) => v / r);",
            plane,
        )
    )


def click(driver: webdriver.Chrome, plane: int, fx: float, fy: float) -> dict:
    """Click at fractions (fx, fy) of a plane; returns what the page shows under the cursor."""
    canvas = driver.find_element("id", "gl")
    left, top, width, height = tile(driver, plane)
    x = left + fx * width - canvas.size["width"] / 2
    y = top + fy * height - canvas.size["height"] / 2
    ActionChains(driver).move_to_element_with_offset(canvas, int(x), int(y)).click().perform()
    wait_drawn(driver)
    line = driver.find_element("id", "location")
    return {
        "mm": driver.execute_script("return Array.from(XAIMED_VIEWER.location.mm).slice(0, 3)"),
        "voxel": [int(v) for v in line.get_attribute("data-voxel").split(",")],
        "value": float(line.get_attribute("data-map-value")),
        "text": line.text,
    }


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    folder = os.environ.get("XAIMED_REPORT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def test_index_page(browser: webdriver.Chrome, sample_run: Path) -> None:
    report = sample_run / "report"
    open_page(browser, (report / "index.html").as_uri())
    rows = browser.find_elements("css selector", "#grid tbody tr")
    assert [r.get_attribute("data-case") for r in rows] == ["broken", "case01", "case03"]
    images = browser.find_elements("css selector", "#grid tbody img")
    assert len(images) == 4
    assert all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
    failures = browser.find_element("id", "failures").text
    assert "broken" in failures and "InputError" in failures
    Select(browser.find_element("id", "f-status")).select_by_value("failed")
    rows = browser.find_elements("css selector", "#grid tbody tr")
    assert [r.get_attribute("data-case") for r in rows] == ["broken"]
    Select(browser.find_element("id", "f-status")).select_by_value("")
    Select(browser.find_element("id", "f-method")).select_by_value("grad_cam")
    assert [h.text for h in browser.find_elements("css selector", "#grid thead th")][-1:] == [
        "grad_cam"
    ]
    assert len(browser.find_elements("css selector", "#grid tbody img")) == 2
    Select(browser.find_element("id", "f-method")).select_by_value("")
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "report-index.png")
    check_logs(browser, report)


def test_case_page_viewer(browser: webdriver.Chrome, sample_run: Path) -> None:
    report = sample_run / "report"
    open_page(browser, (report / "case.html").as_uri() + "?case=case03&method=integrated_gradients")
    wait_drawn(browser)
    pixels = canvas_pixels(browser)
    # Not blank: the image and the map are drawn (many distinct colours, most of them not
    # the black background), and warm (map) colours are among them.
    assert pixels.std() > 20
    assert (pixels.sum(axis=2) > 30).mean() > 0.2
    warm = (pixels[..., 0] > 180) & (pixels[..., 1] > 60) & (pixels[..., 2] < 80)
    assert warm.sum() > 20
    screenshot(browser, "report-case.png")

    # The threshold slider, moved with the keyboard as a user would: the map thins out.
    slider = browser.find_element("id", "threshold")
    slider.click()
    slider.send_keys(*[Keys.ARROW_RIGHT] * 40)
    wait_drawn(browser)
    thresholded = canvas_pixels(browser)
    assert np.abs(thresholded - pixels).mean() > 0.5
    warm_after = (
        (thresholded[..., 0] > 180) & (thresholded[..., 1] > 60) & (thresholded[..., 2] < 80)
    )
    assert warm_after.sum() < warm.sum()

    # Switching the method shows the other map.
    Select(browser.find_element("id", "method")).select_by_value("grad_cam")
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.body.dataset.map") == "grad_cam"
    )
    wait_drawn(browser)
    switched = canvas_pixels(browser)
    assert np.abs(switched - thresholded).mean() > 0.5
    assert "non-negative" in browser.find_element("id", "colormap-note").text

    # The value and the voxel under a click are the NIfTI map's.
    image = nib.load(sample_run / "case03" / "case03_grad_cam.nii.gz")
    values = image.get_fdata()
    step = browser.execute_script("return XAIMED_VIEWER.map.volume.step")
    for fx, fy in ((0.5, 0.5), (0.3, 0.4), (0.62, 0.7)):
        shown = click(browser, 0, fx, fy)
        voxel = tuple(shown["voxel"])
        assert shown["value"] == pytest.approx(values[voxel], abs=step / 2 + 1e-9)
        # The voxel is the one containing the world position under the cursor.
        inside = np.linalg.inv(image.affine) @ [*shown["mm"], 1]
        assert np.all(np.abs(inside[:3] - voxel) <= 0.5 + 1e-3)
        assert f"voxel {', '.join(map(str, voxel))}" in shown["text"]
    check_logs(browser, report)


def test_case_page_shows_each_channels_part(browser: webdriver.Chrome, tmp_path: Path) -> None:
    import yaml

    # The multi-sequence sample (configs/multisequence.yaml) on its first case, saliency only.
    samples = Path(__file__).parent.parent / "sample_data" / "multisequence"
    cases = tmp_path / "cases"
    cases.mkdir()
    for path in samples.glob("case07_*.nii.gz"):
        shutil.copy(path, cases / path.name)
    listing = (samples / "cases.csv").read_text().splitlines()
    (cases / "cases.csv").write_text("\n".join(listing[:2]) + "\n")
    config = yaml.safe_load((samples.parent.parent / "configs" / "multisequence.yaml").read_text())
    config["model"]["weights"] = str(
        samples.parent.parent / "xaimed" / "sample" / "multiseq_cnn_state.pt"
    )
    config.update(methods=["saliency"], outputs={"png": False}, runtime={"device": "cpu"})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = Path(sys.executable).parent / "xaimed"
    done = subprocess.run(
        [str(command), "explain", str(cases / "cases.csv"), "-c", str(tmp_path / "config.yaml"),
         "-o", str(tmp_path / "run"), "-q"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = tmp_path / "run" / "report"
    open_page(browser, (report / "case.html").as_uri() + "?case=case07&method=saliency/flair")
    assert browser.execute_script("return document.body.dataset.map") == "saliency/flair"
    options = [
        o.get_attribute("value") for o in Select(browser.find_element("id", "method")).options
    ]
    assert options == ["saliency", *(f"saliency/{n}" for n in ("t1", "t1ce", "t2", "flair"))]
    rows = browser.find_elements("css selector", "#channels tbody tr")
    assert [r.find_element("tag name", "a").text for r in rows] == ["t1", "t1ce", "t2", "flair"]
    assert rows[3].text.endswith("case07/case07_saliency_flair.nii.gz")
    current = browser.find_element("css selector", "#channels a[aria-current]")
    assert current.text == "flair"
    wait_drawn(browser)
    flair = canvas_pixels(browser)
    # A channel's link shows its part, on the scale shared by the parts.
    rows[0].find_element("tag name", "a").click()
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.body.dataset.map") == "saliency/t1"
    )
    wait_drawn(browser)
    assert np.abs(canvas_pixels(browser) - flair).mean() > 0.5
    scale = browser.execute_script("return XAIMED_VIEWER.map.scale")
    parts = [nib.load(tmp_path / "run" / "case07" / f"case07_saliency_{n}.nii.gz").get_fdata()
             for n in ("t1", "t1ce", "t2", "flair")]  # fmt: skip
    assert scale == pytest.approx(max(float(np.abs(p).max()) for p in parts), rel=1e-4)
    screenshot(browser, "report-case-channels.png")
    check_logs(browser, report)


def test_planes_show_the_patient_as_the_labels_say(
    browser: webdriver.Chrome, sample_run: Path
) -> None:
    """Radiological convention, as ITK-SNAP shows these files: in the axial and coronal planes
    the patient's right (+x in RAS) is on the screen's left; the sagittal plane has the nose
    (anterior, +y) on the left; superior (+z) is up. Checked on the LPS-stored case."""
    report = sample_run / "report"
    open_page(browser, (report / "case.html").as_uri() + "?case=case03")
    left, right = click(browser, 0, 0.3, 0.5)["mm"], click(browser, 0, 0.7, 0.5)["mm"]
    assert left[0] > right[0] + 10  # axial: R on the left, L on the right
    top, bottom = click(browser, 0, 0.5, 0.3)["mm"], click(browser, 0, 0.5, 0.7)["mm"]
    assert top[1] > bottom[1] + 10  # axial: A at the top
    left, right = click(browser, 1, 0.3, 0.5)["mm"], click(browser, 1, 0.7, 0.5)["mm"]
    assert left[0] > right[0] + 10  # coronal: R on the left
    top, bottom = click(browser, 1, 0.5, 0.3)["mm"], click(browser, 1, 0.5, 0.7)["mm"]
    assert top[2] > bottom[2] + 10  # coronal: S at the top
    left, right = click(browser, 2, 0.3, 0.5)["mm"], click(browser, 2, 0.7, 0.5)["mm"]
    assert left[1] > right[1] + 10  # sagittal: A on the left
    # The viewer opens on the strongest voxel of the map, inside the sample's lesion.
    open_page(browser, (report / "case.html").as_uri() + "?case=case03&method=integrated_gradients")
    crosshair = browser.execute_script("return Array.from(XAIMED_VIEWER.location.mm).slice(0, 3)")
    mask = nib.load(Path(__file__).parent.parent / "sample_data" / "masks" / "case03_lesion.nii.gz")
    voxel = np.round(np.linalg.inv(mask.affine) @ [*crosshair, 1])[:3].astype(int)
    assert mask.get_fdata()[tuple(voxel)] > 0
    check_logs(browser, report)


def synthetic_run(folder: Path, cases: int, methods: int) -> dict[str, int]:
    """A run folder of ``cases`` x ``methods`` manifest rows (no map files) and a metric."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    names = [f"method{m}" for m in range(methods)]
    columns = ["case_id", "case_index", "source", "label", "method", "target", "status",
               "error_type", "error", "nifti", "sidecar", "png", "wall_s", "predicted_class",
               "probability"]  # fmt: skip
    failed = set(rng.choice(cases, size=cases // 50, replace=False).tolist())
    with (
        (folder / "manifest.csv").open("w", newline="") as fh,
        (folder / "metrics.csv").open("w", newline="") as mh,
    ):
        writer = csv.writer(fh)
        metrics = csv.writer(mh)
        writer.writerow(columns)
        metrics.writerow(["case_id", "method", "target", "metric", "value", "detail"])
        for c in range(cases):
            prob = float(rng.random())
            for name in names:
                status = "failed" if c in failed else "ok"
                label = "lesion" if c % 3 else "healthy"
                writer.writerow([
                    f"sub-{c:05d}", c, f"/data/sub-{c:05d}.nii.gz", label,
                    name, "lesion", status, "InputError" if c in failed else "",
                    f"case sub-{c:05d}: unreadable." if c in failed else "", "", "", "", "1.0",
                    "lesion" if prob > 0.5 else "healthy", f"{prob:.4f}",
                ])  # fmt: skip
                if status == "ok":
                    metrics.writerow([f"sub-{c:05d}", name, "lesion", "pointing_game", c % 7, ""])
    return {"failed": len(failed)}


def test_index_of_5000_cases_opens_and_filters(browser: webdriver.Chrome, tmp_path: Path) -> None:
    run = tmp_path / "big"
    expected = synthetic_run(run, 5000, 5)
    start = time.perf_counter()
    result = build_report(run)
    built = time.perf_counter() - start
    report = result.index.parent
    start = time.perf_counter()
    # A page that rendered all 25,000 cells would take far longer than this bound.
    open_page(browser, result.index.as_uri(), timeout=10)
    opened = time.perf_counter() - start
    # Paginated: one page of rows in the document, whatever the cohort's size.
    assert len(browser.find_elements("css selector", "#grid tbody tr")) == 50
    assert browser.find_element("id", "count").text == "5000 of 5000 cases"
    start = time.perf_counter()
    Select(browser.find_element("id", "f-status")).select_by_value("failed")
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element("id", "count").text == f"{expected['failed']} of 5000 cases"
    )
    Select(browser.find_element("id", "f-status")).select_by_value("ok")
    Select(browser.find_element("id", "sort")).select_by_visible_text("metric: pointing_game")
    first = browser.find_element("css selector", "#grid tbody tr").get_attribute("data-case")
    filtered = time.perf_counter() - start
    assert int(first.removeprefix("sub-")) % 7 == 6  # the largest value first
    check_logs(browser, report)
    print(f"5000 x 5: report built in {built:.1f} s, opened in {opened:.2f} s, filtered and "
          f"sorted in {filtered:.2f} s")  # fmt: skip
