"""What a ``rlcam report`` page costs: file size, time to first frame, and redraw per arrow key.

Records a Breakout run with the shipped agent (or takes an existing trace), writes its report, and
opens it in headless Chromium (Debian's ``chromium`` + ``chromium-driver`` through selenium) several
times. Prints one JSON object; docs/benchmarks.md quotes it.

    python scripts/report_benchmark.py --steps 1000            # records, then measures
    python scripts/report_benchmark.py --trace run.npz         # measures an existing trace's page

- first frame: ``performance.now()`` when the page has drawn its first frame, i.e. milliseconds
  from the start of navigation (parse, decode of the data, first chunk of frames inflated, drawn);
- redraw: the page's own handler time for one ArrowRight (composite the frame and map, update the
  panel and the timeline), averaged over many steps; and the time from the key event until the
  browser has painted the new frame (the next animation frame), which includes waiting for it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_PAINTED = """
const done = arguments[arguments.length - 1];
const n = arguments[0];
const times = [];
let i = 0;
function one() {
  const t0 = performance.now();
  document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight', bubbles: true}));
  // The next animation frame's callbacks run just before it is painted; a task queued from there
  // runs once the paint is done.
  requestAnimationFrame(() => setTimeout(() => {
    times.push(performance.now() - t0);
    if (++i < n) one(); else done(times);
  }, 0));
}
one();
"""

_HANDLER = """
const n = arguments[0];
const times = [];
const phases = {frames: [], panels: [], timeline: []};
for (let i = 0; i < n; i++) {
  document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight', bubbles: true}));
  times.push(window.rlcam.lastDrawMs);
  for (const k in phases) phases[k].push(window.rlcam.lastPhases[k]);
}
return [times, phases];
"""


def browser():
    os.environ["SE_AVOID_STATS"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1200",
    ):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)


def first_frame_ms(driver, page: Path) -> float:
    driver.get("about:blank")
    driver.get(page.resolve().as_uri())
    end = time.monotonic() + 30
    while time.monotonic() < end:
        ms = driver.execute_script("return window.rlcam && window.rlcam.firstFrameMs")
        if ms:
            return float(ms)
        time.sleep(0.01)
    raise RuntimeError("the page did not draw its first frame within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--trace", type=Path, help="measure this trace's page instead of recording")
    parser.add_argument("--all-actions", action="store_true")
    parser.add_argument("--loads", type=int, default=5, help="page loads for the first-frame time")
    parser.add_argument("--keys", type=int, default=300, help="arrow-key steps for the redraw time")
    args = parser.parse_args()

    import torch

    from rlcam.record import RecordConfig, record
    from rlcam.report import write_report

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="rlcam-report-bench-"))
    trace = args.trace
    result = {}
    if trace is None:
        started = time.perf_counter()
        cfg = RecordConfig(
            agent=ROOT / "agents" / "breakout_ppo.zip",
            steps=args.steps,
            out=work / "run.mp4",
            all_actions=args.all_actions,
        )
        record(cfg)
        result["record_s"] = round(time.perf_counter() - started, 1)
        trace = work / "run.npz"
    started = time.perf_counter()
    page = write_report(trace, work / "run.html", video=None).path
    result["report_s"] = round(time.perf_counter() - started, 1)
    result["steps"] = int(json.loads(page.read_text().split('id="rlcam-data">', 1)[1].split("</script>")[0])["steps"])
    result["trace_mb"] = round(trace.stat().st_size / 1e6, 2)
    result["page_mb"] = round(page.stat().st_size / 1e6, 2)

    driver = browser()
    try:
        loads = [first_frame_ms(driver, page) for _ in range(args.loads)]
        result["first_frame_ms"] = {"median": round(statistics.median(loads)), "max": round(max(loads))}
        driver.execute_script("window.rlcam.goto(0)")
        time.sleep(1.0)  # let the background inflate every chunk, as a reader stepping would find it
        keys = min(args.keys, result["steps"] - 1)
        handler, phases = driver.execute_script(_HANDLER, keys)
        result["redraw_handler_ms"] = {"median": round(statistics.median(handler), 2), "max": round(max(handler), 2)}
        result["redraw_phases_median_ms"] = {k: round(statistics.median(v), 2) for k, v in phases.items()}
        driver.execute_script("window.rlcam.goto(0)")
        driver.set_script_timeout(120)
        painted = driver.execute_async_script(_PAINTED, min(100, keys))
        result["key_to_paint_ms"] = {"median": round(statistics.median(painted), 1), "max": round(max(painted), 1)}
    finally:
        driver.quit()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
