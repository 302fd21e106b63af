"""What the live page (`hpc-agent serve`) costs on a 1,000-trial campaign.

    python bench/bench_serve.py load              # first load, updates, idle CPU (JSON on stdout)
    python bench/bench_serve.py screenshot docs/serve.png   # the page of a running campaign

`load`: a 1,000-trial campaign is run by the real loop (the scripted executor plays the
cluster, random planning, 10 generations of 100). A real `hpc-agent serve` process serves a
copy of its results folder whose journal is first cut to its first 90 %; the rest of the
journal is then appended event by event, as the driver would, one trial's end (and the
verdicts that follow it) at a time. Measured over real HTTP on localhost (gzip accepted, as
a browser does):

- first load: the page, its scripts and styles, and the first `/api/delta` (everything);
- an update: the `/api/delta?since=...` after one trial ended, against a full reload of
  the state (`since=0`) in the same run, the two alternated;
- an idle poll: nothing changed;
- the server's CPU per minute with no page open, and with one page polling every 2 s.

With Selenium and Debian's chromium it also times the browser: from navigation to a page
that shows all 1,000 trials and their ledger.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPEAT = 7


def build_campaign(root: Path, generations: int = 10, batch: int = 100) -> Path:
    """A finished campaign of generations x batch trials; its results folder."""
    from hpc_agent.config.spec import load_spec
    from hpc_agent.loop.campaign import Campaign
    from hpc_agent.planners.random import RandomPlanner
    from hpc_agent.testing import ScriptedExecutor

    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text("print('the scripted executor plays this')\n")
    (root / "campaign.toml").write_text(
        textwrap.dedent(
            f"""
            [campaign]
            name = "bench-serve"
            metric = "loss"
            generations = {generations}
            batch_size = {batch}

            [experiment]
            command = "python train.py"
            time_budget_s = 60

            [space]
            x = {{ type = "float", low = 0.0, high = 1.0 }}
            k = {{ type = "int", low = 0, high = 1000 }}
            """
        )
    )
    ex = ScriptedExecutor(objective=lambda p: (float(p["x"]) - 0.3) ** 2 + float(p["k"]) / 1e5)
    result = Campaign(load_spec(root), root / "results", ex, RandomPlanner()).run()
    assert result.status == "done", result
    return root / "results"


def start_server(results: Path) -> tuple[subprocess.Popen[str], str, str]:
    """A real `hpc-agent serve` on any free port: (process, base URL, token)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpc_agent", "serve", str(results), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"open: (http://\S+)/\?token=(\S+)", line)
        if m:
            return proc, m.group(1), m.group(2)
    raise SystemExit(f"hpc-agent serve did not start: {proc.stderr.read() if proc.stderr else ''}")


def get(url: str, token: str) -> tuple[float, int, int, bytes]:
    """(seconds, bytes on the wire, bytes of content, content) of one GET, gzip accepted."""
    sep = "&" if "?" in url else "?"
    req = urllib.request.Request(f"{url}{sep}token={token}", headers={"Accept-Encoding": "gzip"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        wire = r.read()
        body = gzip.decompress(wire) if r.headers.get("Content-Encoding") == "gzip" else wire
    return time.perf_counter() - t0, len(wire), len(body), body


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def first_load(base: str, token: str) -> dict[str, Any]:
    assets = [
        "/",
        "/static/app.js",
        "/static/app.css",
        "/static/vendor/uPlot.iife.min.js",
        "/static/vendor/uPlot.min.css",
    ]
    times, wire, raw = [], 0, 0
    for _ in range(REPEAT):
        t_total, wire, raw = 0.0, 0, 0
        for path in [*assets, "/api/delta?since=0"]:
            s, w, n, _ = get(base + path, token)
            t_total, wire, raw = t_total + s, wire + w, raw + n
        times.append(t_total)
    s, w, n, body = get(base + "/api/delta?since=0", token)
    state = json.loads(body)
    return {
        "requests": len(assets) + 1,
        "ms": round(1000 * median(times), 1),
        "bytes_on_wire": wire,
        "bytes_uncompressed": raw,
        "state_bytes_on_wire": w,
        "state_bytes_uncompressed": n,
        "trials": len(state["trials"]),
    }


def updates(base: str, token: str, journal: Path, rest: list[bytes]) -> dict[str, Any]:
    """Append the journal's remaining lines one trial's end at a time; after each, the
    delta (since the last offset) and a full reload, alternated."""
    _, _, _, body = get(base + "/api/delta?since=0", token)
    state = json.loads(body)
    offset, epoch, tag = state["offset"], state["epoch"], state["flight_tag"]
    delta_ms, delta_wire, delta_raw, full_ms, full_wire, changed = [], [], [], [], [], []
    i = 0
    while len(delta_ms) < 5 * REPEAT and i < len(rest):
        batch = [rest[i]]  # one trial_ended, and every event up to the next one
        i += 1
        while i < len(rest) and b'"event":"trial_ended"' not in rest[i]:
            batch.append(rest[i])
            i += 1
        with open(journal, "ab") as f:
            f.write(b"".join(batch))
        s, w, n, body = get(f"{base}/api/delta?since={offset}&epoch={epoch}&flight={tag}", token)
        d = json.loads(body)
        offset, tag = d["offset"], d["flight_tag"]
        delta_ms.append(1000 * s)
        delta_wire.append(w)
        delta_raw.append(n)
        changed.append(len(d.get("trials", [])))
        s, w, _, _ = get(base + "/api/delta?since=0", token)
        full_ms.append(1000 * s)
        full_wire.append(w)
    time.sleep(1.5)  # the trials in flight read again once after the last update
    idle = []
    for _ in range(5 * REPEAT):  # a page polling: each time with the flight tag it was last sent
        idle.append(get(f"{base}/api/delta?since={offset}&epoch={epoch}&flight={tag}", token))
        tag = json.loads(idle[-1][3])["flight_tag"]
    return {
        "updates": len(delta_ms),
        "lines_appended": i,
        "trials_changed_per_update": median([float(c) for c in changed]),
        "update_ms": round(median(delta_ms), 2),
        "update_bytes_on_wire": int(median([float(x) for x in delta_wire])),
        "update_bytes_uncompressed": int(median([float(x) for x in delta_raw])),
        "full_reload_ms": round(median(full_ms), 2),
        "full_reload_bytes_on_wire": int(median([float(x) for x in full_wire])),
        "ratio_update_vs_full_ms": round(median(delta_ms) / median(full_ms), 3),
        "idle_poll_ms": round(1000 * median([x[0] for x in idle]), 2),
        "idle_poll_bytes_on_wire": int(median([float(x[1]) for x in idle])),
    }


def idle_cpu(pid: int, base: str, token: str, window_s: float) -> dict[str, Any]:
    """The server's CPU per minute over windows without a page and with one polling every 2 s,
    alternated."""
    alone, polled = [], []
    for _ in range(5):
        c0 = cpu_of(pid)
        time.sleep(window_s)
        alone.append((cpu_of(pid) - c0) * 60 / window_s)
        _, _, _, body = get(base + "/api/delta?since=0", token)
        d = json.loads(body)
        stop = threading.Event()

        def page(
            offset: int = d["offset"],
            epoch: str = d["epoch"],
            tag: str = d["flight_tag"],
            stop: threading.Event = stop,
        ) -> None:
            while not stop.wait(2.0):
                tag = json.loads(
                    get(f"{base}/api/delta?since={offset}&epoch={epoch}&flight={tag}", token)[3]
                )["flight_tag"]

        thread = threading.Thread(target=page)
        c0 = cpu_of(pid)
        thread.start()
        time.sleep(window_s)
        polled.append((cpu_of(pid) - c0) * 60 / window_s)
        stop.set()
        thread.join()
    return {
        "window_s": window_s,
        "cpu_s_per_min_no_page": round(median(alone), 4),
        "cpu_s_per_min_one_page_polling_2s": round(median(polled), 4),
    }


def browser_load(url: str, trials: int, rows: int) -> dict[str, Any] | None:
    """Navigation to a page showing all its ``trials`` and the ``rows`` of its ledger, in
    headless Chromium."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        return None
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    b = webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=options)
    times = []
    try:
        for _ in range(5):
            b.delete_all_cookies()
            t0 = time.perf_counter()
            b.get(url)
            while time.perf_counter() - t0 < 120 and not (
                b.find_element(By.ID, "trial-count").text == str(trials)
                and len(b.find_elements(By.CSS_SELECTOR, "#ledger tbody tr")) >= rows
            ):
                time.sleep(0.01)
            if time.perf_counter() - t0 >= 120:
                raise SystemExit(f"the browser never showed {trials} trials")
            times.append(time.perf_counter() - t0)
    finally:
        b.quit()
    return {"browser_first_load_ms": round(1000 * median(times), 1), "repeat": 5}


def bench_load(window_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        built = build_campaign(Path(tmp) / "camp")
        results = Path(tmp) / "served"
        shutil.copytree(built, results)
        lines = (results / "journal.jsonl").read_bytes().splitlines(keepends=True)
        ends = [i for i, line in enumerate(lines) if b'"event":"trial_ended"' in line]
        cut = ends[-(5 * REPEAT + 5)]  # every trial planned; the last 40 still to end
        (results / "journal.jsonl").write_bytes(b"".join(lines[:cut]))
        proc, base, token = start_server(results)
        try:
            out: dict[str, Any] = {"campaign": "1,000 trials (10 x 100), scripted executor, random planner"}
            out["first_load"] = first_load(base, token)
            out["updates"] = updates(base, token, results / "journal.jsonl", lines[cut:])
            with open(results / "journal.jsonl", "ab") as f:  # the rest: the whole campaign
                f.write(b"".join(lines[cut + out["updates"]["lines_appended"] :]))
            whole = json.loads(get(base + "/api/delta?since=0", token)[3])
            rows = sum(1 for c in whole["configs"] if not c["purpose"])
            out["browser"] = browser_load(f"{base}/?token={token}", len(whole["trials"]), rows)
            out["idle"] = idle_cpu(proc.pid, base, token, window_s)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return out


# ------------------------------------------------------------------------------- the screenshot

SLOW_TRAIN = """
import json, os, re, time
gen = int(re.search(r"gen-(\\d+)", os.environ["HPC_AGENT_TRIAL_DIR"]).group(1))
p = json.load(open(os.environ["HPC_AGENT_PARAMS"]))
seed = int(os.environ.get("HPC_AGENT_SEED", "0"))
for step in range(8):
    time.sleep(0.4)
    loss = (p["x"] - 0.3) ** 2 + 0.5 * 0.7 ** gen + 0.002 * seed + 0.05 * (7 - step)
    with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
        f.write(json.dumps({"step": step, "loss": loss}) + "\\n")
"""


def screenshot(target: Path) -> None:
    """The page of a campaign while its driver runs (local lanes), saved as a small PNG."""
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # lanes may still write
        camp = Path(tmp) / "mlp-demo"
        camp.mkdir()
        (camp / "train.py").write_text(SLOW_TRAIN)
        (camp / "campaign.toml").write_text(
            textwrap.dedent(
                """
                [campaign]
                name = "mlp-demo"
                goal = "Minimize the validation loss of a small MLP."
                metric = "loss"
                generations = 8
                batch_size = 3
                seeds = 2
                schedule = "async"
                [experiment]
                command = "python train.py"
                time_budget_s = 60
                [space]
                x = { type = "float", low = 0.0, high = 1.0 }
                width = { type = "int", low = 16, high = 256, step = 16 }
                """
            )
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run = [
            sys.executable,
            "-m",
            "hpc_agent",
            "run",
            str(camp),
            "--executor",
            "local",
            "--planner",
            "tpe",
            "-q",
        ]
        driver = subprocess.Popen(run, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = Path(tmp) / "results" / "mlp-demo"
        while not (results / "journal.jsonl").exists():
            time.sleep(0.2)
        proc, base, token = start_server(results)
        options = webdriver.ChromeOptions()
        options.binary_location = str(shutil.which("chromium"))
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1500"):
            options.add_argument(arg)
        b = webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=options)
        try:
            b.get(f"{base}/?token={token}")
            while int(b.find_element("id", "trial-count").text or 0) < 24:
                time.sleep(0.5)
            time.sleep(2.5)  # the next poll, with the trials in flight well under way
            b.save_screenshot(str(target))
        finally:
            b.quit()
            proc.terminate()
            driver.terminate()
            driver.wait(timeout=60)
    img = Image.open(target).convert("RGB").quantize(colors=64)
    img.save(target, optimize=True)
    print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["load", "screenshot"])
    ap.add_argument("target", nargs="?", default="docs/serve.png")
    ap.add_argument("--window", type=float, default=12.0, help="seconds of each idle CPU window")
    args = ap.parse_args()
    if args.what == "load":
        text = json.dumps(bench_load(args.window), indent=2)
        print(text)
        (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
        (ROOT / "bench" / "out" / "serve.json").write_text(text + "\n")
    else:
        screenshot(Path(args.target))


if __name__ == "__main__":
    main()
