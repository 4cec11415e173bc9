"""report.html in a real browser (Debian's chromium + chromium-driver, driven by selenium,
headless) at a phone's width (390 px) and a laptop's (1280 px): no horizontal overflow, the
contents sidebar (a top bar on the phone) stays in view and its links work, an image enlarges
on click, and the page makes no request outside itself.

Skipped, saying which is missing, only where chromium, chromedriver or selenium is absent
(``.ci/run`` installs them).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from reporter.report.render import slug
from tests.report_bundle import CLASSES, audit_small_bundle

CHROMIUM = next((p for p in ("chromium", "chromium-browser") if shutil.which(p)), None)
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401

    SELENIUM = True
except ImportError:  # pragma: no cover - selenium is in the dev extra
    SELENIUM = False

_missing = [
    name
    for name, ok in (
        ("chromium", CHROMIUM),
        ("chromedriver (apt: chromium-driver)", CHROMEDRIVER),
        ("selenium (pip: the dev extra)", SELENIUM),
    )
    if not ok
]
pytestmark = pytest.mark.skipif(
    bool(_missing), reason=f"browser test needs {', '.join(_missing)}: not installed"
)

WIDTHS = (390, 1280)


@pytest.fixture(scope="module")
def html_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return audit_small_bundle(tmp_path_factory.mktemp("browser"), formats="html,json") / (
        "report.html"
    )


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which(CHROMIUM or "chromium") or ""
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def _open(driver, path: Path, width: int) -> None:
    # the device metrics, not the window: a desktop window cannot be made 390 px narrow
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 860, "deviceScaleFactor": 1, "mobile": width < 700},
    )
    driver.get(path.as_uri())
    driver.execute_script("return document.fonts.ready")


@pytest.mark.parametrize("width", WIDTHS)
def test_no_horizontal_overflow(driver, html_path: Path, width: int) -> None:
    _open(driver, html_path, width)
    scroll, inner = driver.execute_script(
        "return [document.scrollingElement.scrollWidth, window.innerWidth]"
    )
    assert inner == width
    assert scroll <= inner, f"the page scrolls sideways at {width} px ({scroll} > {inner})"
    # and no gallery card is cut: every card lies inside the viewport's width
    right = driver.execute_script(
        "return Math.max(...[...document.querySelectorAll('.card, .avg, figure.chart img')]"
        ".map(e => e.getBoundingClientRect().right))"
    )
    assert right <= inner


@pytest.mark.parametrize("width", WIDTHS)
def test_contents_follow_the_reader(driver, html_path: Path, width: int) -> None:
    """The contents stay in view after scrolling far down, and a link in them jumps."""
    _open(driver, html_path, width)
    driver.execute_script("document.getElementById('appendix').scrollIntoView()")
    top, bottom, shown = driver.execute_script(
        "const r = document.getElementById('contents').getBoundingClientRect();"
        "return [r.top, r.bottom, getComputedStyle(document.getElementById('contents')).display]"
    )
    assert shown != "none"
    assert top <= 1 and bottom > 20, f"contents scrolled away at {width} px ({top}, {bottom})"
    link = driver.find_element("css selector", "#contents a[href='#performance']")
    link.click()
    assert (
        driver.execute_script(
            "return Math.abs(document.getElementById('performance').getBoundingClientRect().top)"
        )
        < 80
    )


def test_gallery_rows_are_even_at_1280(driver, html_path: Path) -> None:
    """At 1280 px the cards of one gallery row share one line (no ragged 2 + 1 wrap)."""
    _open(driver, html_path, 1280)
    tops = driver.execute_script(
        "return [...document.querySelectorAll('.gallery-kind .cards')].map("
        "c => new Set([...c.children].map(e => Math.round(e.getBoundingClientRect().top))).size)"
    )
    assert tops and max(tops) == 1


def test_class_anchors(driver, html_path: Path) -> None:
    _open(driver, html_path, 1280)
    for name in CLASSES:
        assert driver.execute_script(
            f"return document.getElementById('class-{slug(name)}') !== null"
        ), name


@pytest.mark.parametrize("width", WIDTHS)
def test_image_enlarges_on_click(driver, html_path: Path, width: int) -> None:
    _open(driver, html_path, width)
    img = driver.find_element("css selector", ".card .tile img")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    small = img.size["width"]
    img.click()
    box = driver.find_element("id", "lightbox")
    assert box.is_displayed()
    big = driver.find_element("css selector", "#lightbox img")
    assert big.get_attribute("src") == img.get_attribute("src")
    assert big.size["width"] >= 2 * small
    driver.find_element("tag name", "body").send_keys("\ue00c")  # Escape
    assert not box.is_displayed()


def test_no_request_outside_the_file(driver, html_path: Path) -> None:
    """The browser loads the file and nothing else; no src or href points outside it."""
    html = html_path.read_text(encoding="utf-8")
    for attr, value in re.findall(r'\b(src|href)="([^"]*)"', html):
        assert value.startswith(("data:", "#")), f"{attr}={value[:60]} leaves the file"
    assert "url(" not in re.sub(r"url\(data:[^)]*\)", "", html)
    _open(driver, html_path, 1280)
    driver.find_element("css selector", ".card .tile img").click()
    entries = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert [e for e in entries if not e.startswith("data:")] == []
