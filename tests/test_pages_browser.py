"""The pages for people in a real browser: Debian's headless Chromium driven by selenium,
against the real Apache deployment, after real twine uploads and the QC commands.

Screenshots go to ``$PYPI_FALLBACK_TEST_OUTPUT`` (else the test's temporary folder) for a
person to look at."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from apache_server import USERS, deployed
from clients import PIP_ACCEPT, raw_get, twine_upload
from distfactory import wheel_bytes, wheel_name, write_wheel
from fake_upstream import running_upstream
from helpers import HOSTILE, metadata, run
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

pytestmark = pytest.mark.apache

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
            "--disable-features=MediaRouter,OptimizationHints,Translate",
            "--window-size=1280,1600"]


@contextmanager
def browser() -> Iterator[webdriver.Chrome]:
    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "chromium and chromium-driver are installed by scripts/setup-venv --test"
    profile = tempfile.mkdtemp(prefix="pf-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in [*HEADLESS, f"--user-data-dir={profile}"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ["SE_OFFLINE"] = "true"  # selenium never looks anything up on the network
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    # what the server has now, not what an HTTP cache may keep for a while
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    try:
        yield driver
    finally:
        driver.quit()
        import shutil

        shutil.rmtree(profile, ignore_errors=True)


def wait_for(check: Callable[[], Any], seconds: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def output_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("PYPI_FALLBACK_TEST_OUTPUT") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def visible_projects(driver: webdriver.Chrome, list_id: str) -> list[str]:
    items = driver.find_elements(By.CSS_SELECTOR, f"#{list_id} li > a")
    return [a.text for a in items if a.is_displayed()]


def test_people_browse_search_and_read_projects(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    wheels = [
        write_wheel(dist, "acme", "1.0", metadata=metadata("acme", "1.0")),
        write_wheel(dist, "beta-tool", "0.3", metadata=metadata(
            "beta-tool", "0.3", "Plain *text*.", "text/plain", "Helpers for the beta team")),
        write_wheel(dist, "gamma", "2.1", metadata=metadata(
            "gamma", "2.1", "Gamma\n=====\n\nrst body\n", "text/x-rst", "Gamma rays")),
    ]
    with running_upstream() as up, deployed(up) as site:
        uploaded = twine_upload(site.url("dev"), "alice", USERS["alice"], *wheels)
        assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
        config = site.settings.source
        run("promote", "acme==1.0", "--from", "dev", "--to", "stable", config=config)
        run("yank", "acme==1.0", "--repo", "stable", "--reason", "broken <build>",
            config=config)
        base = f"{site.origin}/pypi/"

        # installers never see the pages: the listings are what they were
        status, _, body = raw_get(site.url("dev") + "acme/", headers={"Accept": PIP_ACCEPT})
        assert status == 200 and b"+pages" not in body
        assert json.loads(body)["name"] == "acme"
        status, headers, body = raw_get(base, headers={"Accept": PIP_ACCEPT})
        assert status == 200 and "repositories" in json.loads(body)
        # a page is HTML whatever the client asks for
        status, headers, body = raw_get(base + "+pages/acme/", headers={"Accept": PIP_ACCEPT})
        assert status == 200 and headers["Content-Type"].startswith("text/html"), \
            site.error_log()
        assert headers["X-Content-Type-Options"] == "nosniff"

        out = output_dir(tmp_path)
        with browser() as driver:
            def counts() -> list[str]:
                # the app folds landing-page rebuilds (at most one per 2 s): reload until
                # the last upload shows
                driver.get(base)
                return [c.text for c in driver.find_elements(By.CSS_SELECTOR,
                                                             "table.repos td.num")]

            assert wait_for(lambda: counts() == ["3", "1"], what="counts 3 and 1")
            assert driver.title.startswith("Package index")
            repos = [row.text.split()[0] for row in
                     driver.find_elements(By.CSS_SELECTOR, "table.repos tbody tr")]
            assert repos == ["dev", "stable"]
            assert wait_for(lambda: visible_projects(driver, "projects"), what="projects") == \
                ["acme", "beta-tool", "gamma"]
            recent = driver.find_element(By.CSS_SELECTOR, "ol.recent").text
            assert "promote to stable" in recent and "upload to dev" in recent
            url_cell = driver.find_element(By.CSS_SELECTOR, "table.repos code.index-url")
            assert url_cell.text == f"{base}dev/"  # made absolute by the page's script
            driver.save_screenshot(str(out / "landing.png"))

            search = driver.find_element(By.ID, "q")
            assert driver.find_element(By.CSS_SELECTOR, "label[for=q]").text
            search.send_keys("beta")
            assert wait_for(lambda: visible_projects(driver, "results") == ["beta-tool"],
                            what="search narrowing to beta-tool")
            assert visible_projects(driver, "projects") == []
            status_line = driver.find_element(By.ID, "results-status").text
            assert status_line == "1 project matches"
            search.clear()
            search.send_keys("rays")  # by summary
            assert wait_for(lambda: visible_projects(driver, "results") == ["gamma"],
                            what="search by summary")
            search.send_keys(Keys.CONTROL, "a")
            search.send_keys(Keys.BACKSPACE)
            assert wait_for(lambda: len(visible_projects(driver, "projects")) == 3,
                            what="the full list back")
            search.send_keys("acme")
            wait_for(lambda: visible_projects(driver, "results") == ["acme"], what="acme")
            driver.find_element(By.LINK_TEXT, "acme").click()

            wait_for(lambda: driver.current_url == f"{base}+pages/acme/", what="project page")
            description = driver.find_element(By.CSS_SELECTOR, ".description")
            assert description.find_element(By.TAG_NAME, "h1").text == "Acme"
            assert "<script>" in description.text  # shown as text, never run
            assert driver.execute_script("return window.pwned === undefined")
            hostile = [el for el in description.find_elements(By.CSS_SELECTOR, "*")
                       if el.get_attribute("onerror") or el.get_attribute("onmouseover")
                       or (el.get_attribute("href") or "").startswith("javascript:")]
            assert hostile == []
            description.find_element(By.PARTIAL_LINK_TEXT, "click me").click()
            assert driver.execute_script("return window.pwned === undefined")
            assert HOSTILE  # the description above is the hostile one
            errors = [e["message"] for e in driver.get_log("browser")
                      if "Content Security Policy" in e["message"]]
            assert errors == []  # nothing even tried to run

            files = driver.find_element(By.CSS_SELECTOR, "details.release").text
            assert "yanked: in stable: broken <build>" in files
            assert "stable (promoted from dev)" in files and "alice" in files
            trail = driver.find_element(By.CSS_SELECTOR, "table.trail").text
            assert "carol promote stable" in trail and "from dev" in trail
            assert "alice upload dev" in trail
            install = driver.find_element(By.CSS_SELECTOR, "pre.install").text
            assert install == f"pip install --index-url {base}dev/ acme"
            meta = driver.find_element(By.CSS_SELECTOR, "aside").text
            assert ">=3.9" in meta and "requests>=2" in meta and "Evil" not in meta
            driver.save_screenshot(str(out / "project.png"))

            # keyboard: the skip link comes first, then the way back
            driver.get(f"{base}+pages/acme/")
            driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
            assert driver.switch_to.active_element.text == "Skip to content"
            driver.switch_to.active_element.send_keys(Keys.TAB)
            back = driver.switch_to.active_element
            assert back.text == "All repositories and projects"
            back.send_keys(Keys.ENTER)
            wait_for(lambda: driver.current_url == base, what="back on the landing page")

            driver.set_window_size(390, 844)  # a phone
            driver.get(f"{base}+pages/acme/")
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= 390, "the page scrolls sideways on a phone"
            driver.save_screenshot(str(out / "project-phone.png"))

            def background() -> str:
                return str(driver.execute_script(
                    "return getComputedStyle(document.body).backgroundColor"))

            assert background() == "rgb(255, 255, 255)"
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
                "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
            driver.set_window_size(1280, 1000)
            driver.get(base)
            assert background() == "rgb(21, 24, 29)"  # the dark scheme
            driver.save_screenshot(str(out / "landing-dark.png"))
        print(f"screenshots in {out}")


def test_overlay_page_shows_upstream_files_and_what_the_cache_fetched(tmp_path: Path) -> None:
    with running_upstream() as up:
        up.add("acme", wheel_name("acme", "1.0"), wheel_bytes("acme", "1.0"))
        with deployed(up, '[policy]\noverlay = ["acme"]\n', mode="cache") as site:
            ours = write_wheel(tmp_path, "acme", "2.0+local")
            uploaded = twine_upload(site.url("dev"), "alice", USERS["alice"], ours)
            assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
            page_url = f"{site.origin}/pypi/+pages/acme/"

            def files() -> dict[str, str]:
                _, _, body = raw_get(page_url)
                rows = re.findall(r'<td><a href="([^"]+)">([^<]+)</a></td>\s*<td>([^<]*)</td>',
                                  body.decode())
                return {name: where for _, name, where in rows}

            wait_for(lambda: len(files()) == 2, what="the overlay's page")
            assert files() == {wheel_name("acme", "2.0+local"): "dev",
                               wheel_name("acme", "1.0"): "upstream"}
            assert b'title="Local files are merged with the upstream' in raw_get(page_url)[2]
            status, _, _ = raw_get(f"{site.origin}/pypi/+upstream/acme/"
                                   f"{wheel_name('acme', '1.0')}")
            assert status == 200, site.error_log()
            assert wait_for(lambda: files()[wheel_name("acme", "1.0")] ==
                            "cached from upstream", what="cached from upstream")
