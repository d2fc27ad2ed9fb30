"""The dashboard of a live local deployment, in a real browser (Debian's Chromium, headless):
every node shows, the counters move, and a device killed with SIGKILL turns offline on the page
within 5 s.

To refresh the picture in the docs, run this test with
``DDNN_DASHBOARD_SCREENSHOT=docs/img/dashboard.png``.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from browser import chromium_available, headless_chromium, node_health, wait_for, why_unavailable
from test_deploy import needs_mosquitto

from ddnn.runtime.deploy import finish_local, run_local, start_local
from ddnn.runtime.gateway import RunningGateway

OFFLINE_WITHIN_S = 5.0  # the bound: SIGKILL to "offline" on the page


def answered_last_minute(driver) -> int:
    text = driver.find_element("id", "answered-last-minute").text.strip().replace(",", "")
    return int(text) if text.isdigit() else -1


@needs_mosquitto
@pytest.mark.slow
def test_the_dashboard_follows_a_live_deployment_and_shows_a_killed_device_offline(run_c, tmp_path):
    if not chromium_available():
        if os.environ.get("CI"):  # CI installs Chromium: a skip there would hide a failure
            pytest.fail(why_unavailable())
        pytest.skip(why_unavailable())
    dep = start_local(run_c, {"rate": 6.0, "deadline": 0.3, "thresholds": "0.5"})
    gateway = RunningGateway(dep.broker.settings("observer"), dep.topics, 0)
    seen: dict[str, object] = {}
    errors: list[BaseException] = []

    def look(dep) -> None:
        try:
            with headless_chromium() as driver:
                driver.get(gateway.url)
                everyone = set(dep.nodes)
                wait_for(
                    driver,
                    lambda d: (
                        everyone <= set(node_health(d))
                        and all(node_health(d)[n] == "online" for n in everyone)
                    ),
                    30,
                    f"every node ({', '.join(sorted(everyone))}) online on the page",
                )
                first = answered_last_minute(driver)
                wait_for(
                    driver,
                    lambda d: answered_last_minute(d) > max(first, 0),
                    30,
                    "the answered counter to move",
                )
                seen["moved"] = (first, answered_last_minute(driver))
                dep.processes.kill("device_2")
                killed = time.monotonic()
                wait_for(
                    driver,
                    lambda d: node_health(d).get("device_2") == "offline",
                    OFFLINE_WITHIN_S,
                    "device_2 offline on the page",
                )
                seen["offline_after_s"] = time.monotonic() - killed
                seen["health"] = node_health(driver)
                shot = tmp_path / "dashboard.png"
                driver.save_screenshot(str(shot))
                seen["png"] = shot.read_bytes()
                if target := os.environ.get("DDNN_DASHBOARD_SCREENSHOT"):
                    shutil.copy(shot, Path(target))
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    browser = threading.Thread(target=look, args=(dep,))
    try:
        run_local(dep, grace=2.0, timeout=120, during=lambda d: browser.start())
        browser.join(timeout=120)
    finally:
        finish_local(dep, 0.0)
        gateway.stop()
    if errors:
        raise errors[0]
    first, later = seen["moved"]  # type: ignore[misc]
    assert later > first
    assert seen["offline_after_s"] <= OFFLINE_WITHIN_S  # type: ignore[operator]
    health = seen["health"]
    assert health["device_2"] == "offline"  # type: ignore[index]
    assert health["device_0"] in ("online", "done") and health["aggregator"] == "online"  # type: ignore[index]
    png = seen["png"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # type: ignore[index]
