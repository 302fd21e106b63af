"""The live page in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver (no browser is downloaded).

A real driver (``hpc-agent run``, local processes, a slow tiny script) runs a campaign whose
every generation beats the last by far more than the noise between its seeds; a real
``hpc-agent serve`` serves it. The page must show the trial count grow and the champion
change without a reload, keep working when the driver stops and when another one resumes
the campaign, open a trial's page, and be refused without the token.

Needs ``chromium`` and ``chromium-driver`` (apt) and ``selenium`` (pip): skipped without
them, a failure instead when ``HPC_AGENT_REQUIRE_BROWSER=1`` (scripts/test.sh sets it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from unit.serve.test_serve import read_url

# every trial sleeps, then logs a loss that halves with each generation (+ 0.001 per seed)
SLOW_TRAIN = """
import json, os, re, time
gen = int(re.search(r"gen-(\\d+)", os.environ["HPC_AGENT_TRIAL_DIR"]).group(1))
seed = int(os.environ.get("HPC_AGENT_SEED", "0"))
time.sleep(0.8)
with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
    for step in range(3):
        f.write(json.dumps({"step": step, "loss": 2.0 ** -gen + 0.001 * seed + 0.1 * (2 - step)}) + "\\n")
"""
CHROMIUM = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if os.access(p, os.X_OK)), None) or shutil.which(name)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium under Selenium (Debian's chromium + chromium-driver)."""
    chromium, driver = _first(CHROMIUM, "chromium"), _first(DRIVER, "chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        selenium = None
    else:
        selenium = webdriver
    if selenium is None or chromium is None or driver is None:
        missing = "selenium (pip)" if selenium is None else "chromium and chromium-driver (apt)"
        if os.environ.get("HPC_AGENT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"a browser is required (HPC_AGENT_REQUIRE_BROWSER=1) but {missing} is missing")
        pytest.skip(f"no browser to drive: install {missing}")
    options = selenium.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    b = selenium.Chrome(service=Service(driver), options=options)
    try:
        yield b
    finally:
        b.quit()


def run_driver(camp: Path, cwd: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpc_agent",
            "run",
            str(camp),
            "--executor",
            "local",
            "--planner",
            "random",
            "-q",
            *extra,
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def text(b: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(b.find_element(By.ID, element_id).text)


@pytest.mark.slow
def test_the_page_follows_a_running_campaign(
    browser: Any, make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    # every better configuration kept at once (no replicates): the trial counts below are exact
    camp = make_campaign(
        script=SLOW_TRAIN,
        batch_size=2,
        generations=4,
        campaign="seeds = 2",
        extra="\n[rigor]\nreplicate = false\n",
    )
    results = tmp_path / "results" / "tiny"
    driver = run_driver(camp, tmp_path)
    serve = None
    try:
        wait_for("the driver's journal", lambda: (results / "journal.jsonl").exists(), 60)
        serve = subprocess.Popen(
            [sys.executable, "-m", "hpc_agent", "serve", str(results), "--port", "0"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = read_url(serve)
        base = url.split("/?token=")[0]
        browser.get(url)
        browser.execute_script("window.sameDocument = 'yes'")  # gone if the page reloaded
        wait_for("the first trials", lambda: text(browser, "trial-count") not in ("", "0"), 60)
        wait_for("a champion", lambda: browser.find_elements(By.ID, "champion-config"), 60)
        first_count = int(text(browser, "trial-count"))
        first_champion = text(browser, "champion-config")
        assert "driver running" in text(browser, "driver")
        wait_for("more trials", lambda: int(text(browser, "trial-count")) > first_count)
        wait_for("a new champion", lambda: text(browser, "champion-config") != first_champion)
        assert driver.wait(timeout=120) == 0, driver.stderr.read() if driver.stderr else ""
        # the driver stopped: the page says so, with every trial, still the same document
        wait_for("the driver's end", lambda: "driver not running" in text(browser, "driver"))
        wait_for("all 16 trials", lambda: text(browser, "trial-count") == "16")
        # another driver resumes the campaign with one more generation: the page follows it
        assert run_driver(camp, tmp_path, "--generations", "5").wait(timeout=120) == 0
        wait_for("the resumed campaign's trials", lambda: text(browser, "trial-count") == "20")
        wait_for("its champion", lambda: text(browser, "champion-config").startswith("0004-"))
        assert browser.execute_script("return window.sameDocument") == "yes"
        assert browser.find_elements(By.CSS_SELECTOR, "#ledger tbody tr.keep")
        assert browser.find_elements(By.CSS_SELECTOR, "#plot canvas")

        # a trial's page, opened from the ledger
        link = browser.find_element(By.CSS_SELECTOR, "#ledger tbody a.trial-link")
        trial = link.get_attribute("data-trial")
        link.click()
        wait_for(
            "the trial's page",
            lambda: text(browser, "trial-id") == trial and "rerun" in text(browser, "trial-body"),
        )
        assert f"hpc-agent rerun {results} {trial}" in text(browser, "rerun-cmd")
        wait_for("its curves", lambda: browser.find_elements(By.CSS_SELECTOR, "#curves canvas"))
        assert browser.execute_script("return window.sameDocument") == "yes"

        # without the token: refused, in the browser and over plain HTTP
        browser.delete_all_cookies()
        browser.get(base + "/")
        assert "403" in browser.find_element(By.TAG_NAME, "body").text
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/api/delta", timeout=10)
        assert refused.value.code == 403
    finally:
        for proc in (driver, serve):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
