#!/usr/bin/env python3
"""Saves a screenshot of a running dashboard, as Debian's chromium shows it.

    scripts/dashboard-screenshot.py URL OUT.png [WAIT_SECONDS]

Drives chromium over WebDriver (chromedriver, plain HTTP on loopback; the standard library
only): opens URL, waits until the page has read its backlog and lists processes, waits
WAIT_SECONDS more (default 0) for live events, and writes the PNG. `scripts/demo.sh` calls it
when DEMO_SCREENSHOT is set; the README's picture is made that way.
"""

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["value"]


def main():
    url, out = sys.argv[1], sys.argv[2]
    extra_wait = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    chromium = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
    chromedriver = os.environ.get("TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
    port = free_port()
    driver = subprocess.Popen([chromedriver, f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    profile = tempfile.mkdtemp(prefix="pc-eventd-shot-")
    try:
        for _ in range(100):
            try:
                call(base, "GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,860",
                f"--user-data-dir={profile}"]
        session = call(base, "POST", "/session", {"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {"binary": chromium, "args": args}}}})["sessionId"]
        path = f"/session/{session}"
        call(base, "POST", path + "/url", {"url": url})
        ready = ("return document.body.dataset.live === 'true' && "
                 "document.querySelectorAll('#process-groups tr[data-key]').length > 0;")
        deadline = time.time() + 60
        while not call(base, "POST", path + "/execute/sync", {"script": ready, "args": []}):
            if time.time() > deadline:
                sys.exit("dashboard-screenshot: the page never listed a process")
            time.sleep(0.2)
        time.sleep(extra_wait)
        png = base64.b64decode(call(base, "GET", path + "/screenshot"))
        with open(out, "wb") as f:
            f.write(png)
        call(base, "DELETE", path)
        print(f"dashboard-screenshot: {out}")
    finally:
        driver.terminate()
        driver.wait()


if __name__ == "__main__":
    main()
