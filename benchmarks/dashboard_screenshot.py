"""The dashboard picture in the docs: a live local deployment, one device killed, headless Chromium.

Starts ``ddnn deploy --local --dashboard`` on a trained run, waits until every node is online
on the page, kills one device with SIGKILL, waits until the page shows it offline, and saves a
full-page screenshot.

Run: python benchmarks/dashboard_screenshot.py RUN_DIR [--out docs/img/dashboard.png]
(needs Debian's chromium and chromium-driver, and selenium)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "runtime"))
from browser import headless_chromium, node_health, wait_for  # noqa: E402

from ddnn.runtime.broker import free_port  # noqa: E402


def device_pid(device: int) -> int:
    """The pid of the ``ddnn serve device --id K`` process."""
    out = subprocess.run(["pgrep", "-f", f"serve device .*--id {device}( |$)"], capture_output=True)
    pids = [int(p) for p in out.stdout.split()]
    if len(pids) != 1:
        raise SystemExit(f"expected one process for device {device}, found {pids}")
    return pids[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--out", default="docs/img/dashboard.png")
    p.add_argument("--kill", type=int, default=3, help="device to kill (3)")
    args = p.parse_args()
    port = free_port()
    ddnn = str(Path(sys.executable).with_name("ddnn"))  # the console script of this environment
    cmd = [ddnn, "deploy", "--run", args.run, "--local", "--rate", "15"]
    cmd += ["--dashboard", str(port), "--linger", "30", "--deadline", "0.3"]
    deploy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        with headless_chromium(1280, 1000) as driver:
            deadline = time.monotonic() + 120
            while True:  # the gateway starts once every node is up
                try:
                    driver.get(f"http://127.0.0.1:{port}/")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            wait_for(
                driver,
                lambda d: (
                    len(node_health(d)) >= 8 and all(h == "online" for h in node_health(d).values())
                ),
                60,
                "every node online",
            )
            time.sleep(6)  # a few seconds of answers
            os.kill(device_pid(args.kill), signal.SIGKILL)
            wait_for(
                driver,
                lambda d: node_health(d).get(f"device_{args.kill}") == "offline",
                5,
                "the killed device offline",
            )
            time.sleep(4)  # answers fused without it
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1280, height)
            driver.save_screenshot(args.out)
            print(f"wrote {args.out}: {node_health(driver)}")
    finally:
        deploy.send_signal(signal.SIGINT)
        deploy.wait(60)


if __name__ == "__main__":
    main()
