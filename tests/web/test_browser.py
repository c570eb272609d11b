"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver, driven by Selenium) against a
real uvicorn on a SQLite workspace while a real launcher runs the jobs. Screenshots go to tests/web/artifacts/.

Skipped, saying why, only when Chromium, its driver or Selenium is missing (scripts/test-services.sh installs
chromium and chromium-driver with apt-get).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.web.conftest import ARTIFACTS, Server

from sluice.api import Workspace
from sluice.launcher.launcher import Launcher, Options

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
    pytest.skip(f"{CHROMIUM} or {DRIVER} is missing: apt-get install chromium chromium-driver "
                "(scripts/test-services.sh does)", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

N = 40
WIDER = """var out = [], w = window.innerWidth;
document.querySelectorAll('body *').forEach(function (e) {
  if (e.getBoundingClientRect().right <= w + 1) return;
  for (var p = e.parentElement; p; p = p.parentElement) if (getComputedStyle(p).overflowX !== 'visible') return;
  out.push(e.tagName + '.' + e.className + ' ' + (e.id || ''));
});
return out.slice(0, 10);"""
"""The elements sticking out of a narrow window (for the failure message)."""


@pytest.fixture
def browser() -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--hide-scrollbars"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # an element replaced by htmx between find and read
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def shot(drv: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    drv.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def count(drv: Any, state: str) -> int:
    return int(drv.find_element(By.ID, f"count-{state}").text.replace(",", ""))


def test_the_dashboard_follows_a_running_campaign(sqlite_ws: Workspace, browser: Any) -> None:
    ws = sqlite_ws
    ws.add_app("quick", "/bin/sh -c 'echo step {i} of a quick job; sleep 0.3; echo done'")
    ws.add_app("bad", "/bin/sh -c 'echo something went wrong >&2; exit 3'")
    ids = ws.add_jobs([{"name": f"s{i}", "app": "quick", "params": {"i": i}, "workflow": "scan"} for i in range(N)])
    ws.add_job("broken", app="bad", workflow="scan", max_retries=0)
    merge = ws.add_job("merge", app="quick", params={"i": "all"}, parents=ids[:10], workflow="scan")
    with Server(Workspace.open(ws.path)) as srv:
        drv = browser
        drv.get(srv.url + "/")
        assert "sluice" in drv.title
        wait_for(lambda: count(drv, "PREPROCESSED") == N + 1, "the first counts")
        assert count(drv, "AWAITING_PARENTS") == 1 and count(drv, "JOB_FINISHED") == 0
        shot(drv, "overview-before")

        launcher = threading.Thread(target=Launcher(ws, Options(idle_timeout=2, status=False)).run, daemon=True)
        launcher.start()
        seen: set[int] = set()
        running_shot = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the page's own polling brings the counts; we only read them
            try:
                finished, running = count(drv, "JOB_FINISHED"), count(drv, "RUNNING")
            except Exception:
                continue
            seen.add(finished)
            if running and not running_shot:
                shot(drv, "overview-running")
                running_shot = True
            if finished == N + 1 and count(drv, "FAILED") == 1:
                break
            time.sleep(0.1)
        assert count(drv, "JOB_FINISHED") == N + 1 and count(drv, "FAILED") == 1, seen
        assert len(seen) >= 3, f"the counts did not change live: saw only {sorted(seen)}"
        shot(drv, "overview-done")
        launcher.join(30)

        # the job table: a filter by state, then by name
        drv.get(srv.url + "/jobs")
        rows = lambda: drv.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")  # noqa: E731
        wait_for(lambda: len(rows()) == N + 2, "the full table")
        Select(drv.find_element(By.ID, "f-state")).select_by_value("FAILED")
        wait_for(lambda: [r.get_attribute("data-id") for r in rows()] == [str(ids[-1] + 1)], "the FAILED filter")
        assert "state=FAILED" in drv.current_url
        Select(drv.find_element(By.ID, "f-state")).select_by_value("")
        box = drv.find_element(By.ID, "f-name")
        box.send_keys("s1*", Keys.TAB)
        names = lambda: [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows()]  # noqa: E731
        wait_for(lambda: names() == ["s1"] + [f"s1{i}" for i in range(10)], "the name filter")
        shot(drv, "jobs-filtered")

        # a job page: its history, parents and output
        drv.get(f"{srv.url}/jobs/{merge.id}")
        hist = drv.find_element(By.ID, "history").text.lower()
        for step in ("awaiting parents", "ready", "running", "job finished"):
            assert step in hist, (step, hist)
        assert len(drv.find_elements(By.CSS_SELECTOR, "#parents li")) == 10
        assert "step all of a quick job" in drv.find_element(By.ID, "log-out").text
        assert drv.find_element(By.ID, "job-state").text == "job finished"
        shot(drv, "job-merge")
        drv.get(f"{srv.url}/jobs/{ids[-1] + 1}")
        assert "something went wrong" in drv.find_element(By.ID, "log-err").text
        assert drv.find_element(By.ID, "job-state").text == "failed"

        # the workflow's graph, drawn whole
        drv.get(srv.url + "/workflows/scan")
        wait_for(lambda: len(drv.find_elements(By.CSS_SELECTOR, "#graph svg .node")) == N + 2, "the graph")
        shot(drv, "workflow-graph")

        # a narrow window: nothing wider than the screen but the tables' own scrolling
        drv.set_window_size(400, 900)
        for page in ("/", "/jobs", f"/jobs/{merge.id}"):
            drv.get(srv.url + page)
            width = drv.execute_script("return document.documentElement.scrollWidth")
            inner = drv.execute_script("return window.innerWidth")
            assert width <= inner + 1, (page, width, inner, drv.execute_script(WIDER))
        drv.get(srv.url + "/")
        shot(drv, "overview-narrow")
