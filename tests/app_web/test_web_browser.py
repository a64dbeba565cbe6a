"""The page in a real browser: headless Debian chromium, driven through the system
chromedriver by selenium (no browser download), against a real ``serve-web`` in
front of a real model API. Screenshots go to the test's folder and to
test-output/ at the repository root (ignored by git) for people to look at."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from app_web.settings import BUNDLED_TEST_PHOTO
from tests.images import SMALL_PHOTO, encode, textured
from tests.procs import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO_ROOT / "test-output"

webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (scripts/install-test-deps.sh)",
)


@pytest.fixture
def browser(tmp_path, monkeypatch):
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-default-apps", "--hide-scrollbars", "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1000",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, css: str, timeout: float = 30):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, css))
    )


def find(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    """Sized to the page, so the whole of it is in the picture."""
    width, height, chrome_h = driver.execute_script(
        "return [window.innerWidth, document.documentElement.scrollHeight,"
        " window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(driver.get_window_size()["width"], max(height, 400) + chrome_h)
    driver.execute_script("window.scrollTo(0, 0)")
    out = tmp_path / name
    assert driver.save_screenshot(str(out))
    SCREENSHOTS.mkdir(exist_ok=True)
    shutil.copy(out, SCREENSHOTS / name)
    with Image.open(out) as im:
        assert im.size[0] >= width * 0.9 and im.size[1] >= 300
        colours = im.convert("RGB").resize((64, 64)).getcolors(64 * 64)
        assert colours is None or len(colours) > 20, "the screenshot is not blank"
    return out


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def lab_photo() -> Path:
    return SMALL_PHOTO if SMALL_PHOTO.exists() else BUNDLED_TEST_PHOTO


def api_answer(api_url: str, path: Path) -> dict:
    import base64

    body = {"image": base64.b64encode(path.read_bytes()).decode()}
    r = requests.post(api_url + "/predict", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def read_result(driver) -> tuple[str, float, str, str]:
    wait_for(driver, "#result-class")
    name = find(driver, "#result-class").text
    pct = float(re.fullmatch(r"([0-9.]+)%", find(driver, "#confidence-value").text).group(1))
    return name, pct, find(driver, "#result-variant").text, find(driver, "#result-version").text


def test_upload_submit_and_read_the_answer(api, start_web, browser, tmp_path):
    web = start_web(api.url, workers=2)
    browser.get(web.url + "/")
    assert "GourmetGram" in browser.title
    submit = find(browser, "#submit")
    assert not submit.is_enabled(), "nothing to submit before a photo is chosen"
    assert find(browser, "#drop-hint").is_displayed()
    screenshot(browser, tmp_path, "web-empty.png")

    photo = lab_photo()
    find(browser, "#file").send_keys(str(photo))
    preview = wait_for(browser, "#preview")
    assert browser.execute_script("return arguments[0].naturalWidth", preview) > 0
    assert photo.name in find(browser, "#file-name").text
    assert submit.is_enabled()
    submit.click()
    name, pct, variant, version = read_result(browser)
    expected = api_answer(api.url, photo)
    assert name == expected["prediction"] == "Vegetable/Fruit"
    assert pct == pytest.approx(expected["probability"] * 100, abs=0.051)
    assert pct > 50
    assert variant == "production" and version == expected["model_version"]
    meter = find(browser, "#confidence-meter")
    assert float(meter.get_attribute("value")) == pytest.approx(expected["probability"], abs=1e-6)
    assert browser.get_cookie("gg_client") is not None
    screenshot(browser, tmp_path, "web-laptop.png")

    # A second photo, made here, replaces the first answer.
    other = tmp_path / "generated-dish.png"
    other.write_bytes(encode(textured((640, 480), seed=11), "PNG"))
    find(browser, "#file").send_keys(str(other))
    assert find(browser, "#result").text == "", "the old answer is cleared on a new photo"
    find(browser, "#submit").click()
    name2, pct2, _, _ = read_result(browser)
    expected2 = api_answer(api.url, other)
    assert name2 == expected2["prediction"]
    assert pct2 == pytest.approx(expected2["probability"] * 100, abs=0.051)
    assert console_errors(browser) == []


def test_drag_and_drop_on_a_phone_sized_window(api, start_web, browser, tmp_path):
    web = start_web(api.url)
    browser.set_window_size(390, 844)
    browser.get(web.url + "/")
    # A real drop event carrying a File, as a desktop drag would deliver it.
    browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch('/static/test-photo.jpeg').then(r => r.blob()).then(blob => {
          const dt = new DataTransfer();
          dt.items.add(new File([blob], 'dropped.jpeg', {type: 'image/jpeg'}));
          const zone = document.getElementById('drop');
          zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
          zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
          done();
        });
        """
    )
    wait_for(browser, "#preview")
    assert "dropped.jpeg" in find(browser, "#file-name").text
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, "no sideways scrolling on a phone"
    find(browser, "#submit").click()
    name, pct, variant, _ = read_result(browser)
    assert name == "Vegetable/Fruit" and pct > 50 and variant == "production"
    screenshot(browser, tmp_path, "web-phone.png")
    assert console_errors(browser) == []


def test_sample_photo_link(api, start_web, browser, tmp_path):
    web = start_web(api.url)
    browser.get(web.url + "/")
    find(browser, "#try-sample").click()
    name, pct, _, _ = read_result(browser)
    assert name == "Vegetable/Fruit" and pct > 50
    assert browser.execute_script("return document.getElementById('preview').naturalWidth") > 0


def test_failures_are_shown_in_words(closed_port_url, start_web, browser, tmp_path):
    web = start_web(closed_port_url, env={"WEB_MAX_UPLOAD_BYTES": "60000"})
    browser.get(web.url + "/")
    find(browser, "#file").send_keys(str(lab_photo()))
    find(browser, "#submit").click()
    box = wait_for(browser, ".result.error")
    assert "not reachable" in box.text and "try again" in box.text
    screenshot(browser, tmp_path, "web-api-down.png")

    big = tmp_path / "big-photo.jpg"
    noise = np.random.default_rng(5).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    big.write_bytes(encode(Image.fromarray(noise), quality=95))
    assert big.stat().st_size > 60_000
    find(browser, "#file").send_keys(str(big))
    box = wait_for(browser, ".result.error")
    assert "too large" in box.text and "60 kB" in box.text
    assert not find(browser, "#submit").is_enabled()

    text = tmp_path / "notes.jpg"
    text.write_text(json.dumps({"not": "a photo"}))
    find(browser, "#file").send_keys(str(text))
    find(browser, "#submit").click()
    box = wait_for(browser, ".result.error")
    assert "not a photo" in box.text


def test_flag_a_prediction_and_the_operator_labels_it(api, start_web, browser, tmp_path,
                                                       feedback_dir):
    from selenium.webdriver.support.ui import Select

    from app_web.feedback_store import FeedbackStore

    secret = "review-" + __import__("secrets").token_urlsafe(18)  # generated per test
    pw = tmp_path / "review-password"
    pw.write_text(secret)
    web = start_web(api.url, workers=2, env={"WEB_REVIEW_PASSWORD_FILE": str(pw)})
    browser.get(web.url + "/")
    find(browser, "#file").send_keys(str(lab_photo()))
    find(browser, "#submit").click()
    name, _, _, _ = read_result(browser)
    pid = find(browser, "#result-id").text
    assert len(pid) == 32
    assert "kept only if you answer" in find(browser, "#feedback-form").text
    assert not find(browser, "#feedback-correction").is_displayed(), "picker opens on Wrong"
    find(browser, "#feedback-wrong").click()
    picker = wait_for(browser, "#feedback-label")
    options = [o.get_attribute("value") for o in Select(picker).options if o.get_attribute("value")]
    assert name not in options and len(options) == 10
    Select(picker).select_by_value("Rice")
    screenshot(browser, tmp_path, "web-feedback-wrong.png")
    find(browser, "#feedback-send").click()
    done = wait_for(browser, "#feedback-done")
    assert "it is Rice, not " + name in done.text and "stored" in done.text
    screenshot(browser, tmp_path, "web-feedback.png")
    row = FeedbackStore("", feedback_dir).get(pid)
    assert (row.queue, row.user_label, row.predicted) == ("flagged", "Rice", name)

    # The operator: Basic auth with the generated password, the flagged queue, a label.
    host = web.url.removeprefix("http://")
    browser.get(f"http://operator:{secret}@{host}/review")
    item = wait_for(browser, f'#queue-flagged tr[data-id="{pid}"]')
    assert "wrong: Rice" in item.text
    thumb = item.find_element("css selector", "img.thumb")
    assert browser.execute_script("return arguments[0].naturalWidth", thumb) > 0
    select = Select(item.find_element("css selector", "select"))
    assert select.first_selected_option.get_attribute("value") == "Rice"
    select.select_by_value("Vegetable/Fruit")  # the operator knows better
    screenshot(browser, tmp_path, "web-review.png")
    item.find_element("css selector", "button").click()
    labelled = wait_for(browser, f'#recent tr[data-id="{pid}"]')
    assert "Vegetable/Fruit" in labelled.text
    assert not browser.find_elements("css selector", f'#queue-flagged tr[data-id="{pid}"]')
    row = FeedbackStore("", feedback_dir).get(pid)
    assert (row.label, row.labelled_by, row.user_label) == ("Vegetable/Fruit", "operator", "Rice")
    assert console_errors(browser) == []
