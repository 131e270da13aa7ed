"""The GPU path, checked and measured in one command, on a machine with CUDA (issue 17).

    python scripts/gpu_check.py [--agent agents/breakout_ppo.zip] [--steps 200] [--docs docs/benchmarks.md]

1. Same maps: ``rlcam record`` (trace only, the policy inputs kept) of ``--steps`` steps of Breakout
   on the CPU and on CUDA, same seed. The two traces' actions and maps are compared step by step
   while the runs see the same observations; then the CPU run's observations are explained again
   on CUDA with the CPU's actions given, so every step is compared even if an argmax tie sent the
   runs apart. A few steps of ``hirescam``, ``fine``, ``rise`` and ``ig`` are compared the same way.
   The maps must agree within ``--rtol`` (max |cuda - cpu| / max |cpu|, over the steps) with cuDNN's
   TF32 convolutions off; the same difference with TF32 on (PyTorch's default for convolutions) is
   printed beside it. Exit 1 when they do not agree.
2. Speed: env steps explained per second at 1 and 64 envs on each device, ``Explainer.explain`` alone
   on real observations (``--rounds`` rounds, median) and the ``record`` loop (trace only; first to
   last step, Breakout's 64 envs stepped in one process).

Tables go to stdout; ``--docs PATH`` also writes them between the ``gpu:begin``/``gpu:end`` markers
of PATH (docs/benchmarks.md's "GPU path" section), ``--json PATH`` keeps the raw figures.
``--against cpu`` runs everything with the CPU in CUDA's place (a dry run of the script itself on a
machine without a GPU; its figures say nothing about GPUs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from benchmark import machine, markdown_table  # noqa: E402

from rlcam.agents import load_agent  # noqa: E402
from rlcam.device import device_meta, resolve_device  # noqa: E402
from rlcam.explainer import Explainer  # noqa: E402
from rlcam.record import RecordConfig, record  # noqa: E402
from rlcam.video import load_trace  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- gpu:begin (written by scripts/gpu_check.py) -->", "<!-- gpu:end -->"
COMPARED = ("cam", "cam_input", "score", "value", "action_values")
METHODS = {"hirescam": 16, "fine": 16, "rise": 4, "ig": 4}  # method -> steps compared


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |b - a| / max |a| (0 when both are all zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.nanmax(np.abs(a)) if a.size else 0.0
    diff = np.nanmax(np.abs(b - a)) if a.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def recorded(agent: Path, device: str, steps: int, tmp: Path, n_envs: int = 1, save_obs: bool = True):
    """``record`` of ``steps`` steps (trace only); returns the trace and the loop's env steps per second."""
    times: list[float] = []
    out = tmp / f"{device.replace(':', '_')}_{n_envs}.mp4"
    cfg = RecordConfig(
        agent=agent, env="Breakout", steps=steps, n_envs=n_envs, out=out, video=False, save_obs=save_obs,
        overwrite=True, device=device,
    )  # fmt: skip
    result = record(cfg, on_step=lambda done, total: times.append(time.perf_counter()))
    rate = n_envs * (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
    return load_trace(result.trace), rate


def replayed(agent_path: Path, device: str, obs: np.ndarray, actions: np.ndarray, method: str = "gradcam") -> dict:
    """Each observation explained on ``device`` with the given actions, one step at a time."""
    agent = load_agent(agent_path, device=device)
    rows: dict[str, list] = {key: [] for key in COMPARED}
    with Explainer(agent, method=method) as explainer:
        for o, a in zip(obs, actions, strict=True):
            explained = explainer.explain(o[None], actions=np.asarray(a).reshape(1))
            for key in COMPARED:
                rows[key].append(getattr(explained, key)[0])
    return {key: np.stack(v) for key, v in rows.items()}


def same_maps(agent: Path, gpu: str, steps: int, tmp: Path) -> tuple[dict, np.ndarray]:
    """The figures of part 1, and the CPU run's observations ``(T, C, H, W)``."""
    torch.backends.cudnn.allow_tf32 = False
    cpu, _ = recorded(agent, "cpu", steps, tmp)
    other, _ = recorded(agent, gpu, steps, tmp)
    same_obs = np.all(cpu["obs"] == other["obs"], axis=tuple(range(1, cpu["obs"].ndim)))
    together = int(np.argmin(same_obs)) if not same_obs.all() else len(same_obs)  # steps before the runs parted
    result = {
        "steps": steps,
        "steps_together": together,
        "action_agreement": float(np.mean(cpu["action"][:together] == other["action"][:together])),
        "recorded": {key: rel_diff(cpu[key][:together], other[key][:together]) for key in COMPARED},
        "device": other.meta["device"],
        "gpu": other.meta.get("gpu"),
    }
    obs, actions = cpu["obs"], cpu["action"]
    base = replayed(agent, "cpu", obs, actions)
    result["replayed"] = {key: rel_diff(base[key], v) for key, v in replayed(agent, gpu, obs, actions).items()}
    result["methods"] = {}
    for method, count in METHODS.items():
        a = replayed(agent, "cpu", obs[:count], actions[:count], method)
        b = replayed(agent, gpu, obs[:count], actions[:count], method)
        result["methods"][method] = {key: rel_diff(a[key], b[key]) for key in ("cam", "cam_input")}
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default: what a user gets
    tf32 = replayed(agent, gpu, obs, actions)
    result["replayed_tf32"] = {key: rel_diff(base[key], v) for key, v in tf32.items()}
    torch.backends.cudnn.allow_tf32 = False
    return result, obs


def explain_rate(agent_path: Path, device: str, obs: np.ndarray, n: int, rounds: int) -> float:
    """Env steps explained per second: ``n / median seconds`` of ``explain`` on batches of ``n`` real observations."""
    agent = load_agent(agent_path, device=device)
    batches = [obs[(np.arange(n) + k) % len(obs)] for k in range(8)]
    seconds = []
    with Explainer(agent) as explainer:
        for batch in batches[:3]:  # warm-up (CUDA kernels chosen, caches made)
            explainer.explain(batch)
        for _ in range(rounds):
            started = time.perf_counter()
            for batch in batches[:3]:
                explainer.explain(batch)  # returns host arrays: the device's work is done
            seconds.append((time.perf_counter() - started) / 3)
    return n / statistics.median(seconds)


def speed(agent: Path, devices: list[str], obs: np.ndarray, rounds: int, loop_steps: dict[int, int], tmp: Path):
    rows = []
    for device in devices:
        for n in sorted(loop_steps):
            rate = explain_rate(agent, device, obs, n, rounds)
            recorded(agent, device, 3, tmp, n_envs=n, save_obs=False)  # warm-up of the env and the device
            _, loop = recorded(agent, device, loop_steps[n], tmp, n_envs=n, save_obs=False)
            rows.append({"device": device, "n_envs": n, "explain": rate, "loop": loop, "loop_steps": loop_steps[n]})
            print(f"[gpu_check] {device}, {n} envs: explain {rate:.0f}, record loop {loop:.0f} env steps/s", flush=True)
    return rows


def render(parity: dict, rows: list[dict], info: dict, rtol: float) -> str:
    lines = [
        f"Run on {info['when']}: `{info['command']}`.",
        "",
        f"Machine: {info['cpu']}, {os.cpu_count()} cores; GPU: {parity['gpu'] or '-'} ({parity['device']}); "
        f"torch {torch.__version__} (CUDA {torch.version.cuda}); torch CPU threads {torch.get_num_threads()}; "
        f"load average {info['load']:.2f} at the start.",
        "",
        f"**Same maps** (the shipped Breakout PPO, {parity['steps']} steps, seed 0; max |cuda - cpu| / max |cpu|; "
        f"cuDNN TF32 off unless said): the two recordings saw the same observations for "
        f"{parity['steps_together']} of {parity['steps']} steps, with action agreement "
        f"{parity['action_agreement']:.3f} over them.",
        "",
    ]
    table = []
    for key in COMPARED:
        table.append([key, f"{parity['recorded'][key]:.1e}", f"{parity['replayed'][key]:.1e}",
                      f"{parity['replayed_tf32'][key]:.1e}"])  # fmt: skip
    lines.append(markdown_table(["field", "recorded", "replayed (CPU's obs and actions)", "replayed, TF32 on"], table))
    lines += ["", markdown_table(
        ["method", "steps", "cam", "cam_input"],
        [[m, METHODS[m], f"{d['cam']:.1e}", f"{d['cam_input']:.1e}"] for m, d in parity["methods"].items()],
    )]  # fmt: skip
    verdict = "agree" if parity["ok"] else "DO NOT agree"
    lines += ["", f"Verdict: the maps {verdict} within rtol {rtol:g} (TF32 off).", ""]
    lines.append(
        "**Speed**: env steps explained per second; `explain` alone on real observations (median of "
        "rounds of 3 calls), and the `record` loop (trace only, first to last step; 64 Breakout envs are "
        "stepped in one process, which bounds that row)."
    )
    lines.append("")
    speed_rows = []
    cpu_rate = {}
    for r in rows:  # the first row of each env count: the CPU's
        cpu_rate.setdefault(r["n_envs"], r)
    for r in rows:
        base = cpu_rate.get(r["n_envs"])
        speed_rows.append([
            r["device"], r["n_envs"], f"{r['explain']:.0f}", f"{r['explain'] / base['explain']:.2f}" if base else "-",
            f"{r['loop']:.0f}", f"{r['loop'] / base['loop']:.2f}" if base else "-",
        ])  # fmt: skip
    lines.append(markdown_table(
        ["device", "n_envs", "explain env steps/s", "x cpu", "record loop env steps/s", "x cpu"], speed_rows
    ))  # fmt: skip
    return "\n".join(lines)


def write_docs(path: Path, block: str) -> None:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"gpu_check: {path} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    path.write_text(head + f"{BEGIN}\n{block.rstrip()}\n{END}" + rest.split(END, 1)[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", type=Path, default=REPO / "agents" / "breakout_ppo.zip")
    parser.add_argument("--steps", type=int, default=200, help="steps recorded on each device (default 200)")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per device and env count (default 30)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="largest relative map difference allowed")
    parser.add_argument("--against", default="cuda", help="the device compared with the CPU (default cuda)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as rlcam record)")
    parser.add_argument("--docs", type=Path, help="also write the tables into this file's gpu markers")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    try:
        gpu = str(resolve_device(args.against))
    except Exception as exc:  # RlcamError: no CUDA here
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rlcam-gpu-check-") as tmp:
        tmp = Path(tmp)
        parity, obs = same_maps(args.agent, gpu, args.steps, tmp)
        worst = max([*parity["recorded"].values(), *parity["replayed"].values()]
                    + [d[k] for d in parity["methods"].values() for k in d])  # fmt: skip
        parity["ok"] = bool(worst <= args.rtol)
        rows = speed(args.agent, ["cpu", gpu], obs, args.rounds, {1: 200, 64: 30}, tmp)
    info = {
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python scripts/gpu_check.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
        "cpu": machine()["cpu"],
        "load": load,
        **device_meta(torch.device(gpu)),
    }
    block = render(parity, rows, info, args.rtol)
    print(block)
    if args.docs:
        write_docs(args.docs, block)
    if args.json:
        args.json.write_text(json.dumps({"parity": parity, "speed": rows, "info": info}, indent=1))
    return 0 if parity["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
