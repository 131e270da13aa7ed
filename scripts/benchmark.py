"""What an explanation costs, side by side with the libraries people use today (issue 6).

    python scripts/benchmark.py [--quick] [--out docs/benchmarks.md] [--peers-python /tmp/bench-venv/bin/python]

Every number is a ratio measured in one run, on the same policy, inputs, steps and seed:

- P1 per call: ``Explainer.explain`` (action + map) vs SB3 ``model.predict(obs, deterministic=True)``,
  and a naive Grad-CAM (autograd from the input, ``loss.backward()`` into every parameter);
  untrained NatureCNN PPO and DQN built on Breakout's spaces, batch 1 and 8.
- Peers: pytorch-grad-cam ``GradCAM`` and Captum ``LayerGradCam`` asked for the same thing
  (the action and its map on the input grid), in one process with rlcam and ``predict``, after
  checking that their maps equal rlcam's.
- P2 end to end: ``record(RecordConfig(...))`` (maps + annotated MP4 + trace; also at ``scale=1``)
  vs a plain SB3 rollout recorded by ``VecVideoRecorder``, one writing raw frames with
  imageio-ffmpeg, and one without video.
- P3 memory: peak RSS (VmHWM) of ``record`` for a short and a long run, each in its own process.
- P4 scale: env steps explained per second for 1, 2, 4, 8 envs (explain alone, and the record loop).

Each part runs in its own subprocess (``--part NAME``) that prints JSON; this process gathers them
and rewrites the block between the markers in ``--out``, leaving the text around it alone. Per-call
timings use ``torch.set_num_threads(1)`` and a warm-up, then short rounds in which every compared
method makes a few calls, in an order rotating every round; ratios are taken round by round (paired,
so a change in background load hits both sides) and the median is reported with its quartiles.
Where a target is missed the part also profiles (cProfile) and the table lists what dominates.

pytorch-grad-cam imports torchvision, which needs a torch build it matches; the peers run in
their own venv (outside the repo, so nothing there is committed)::

    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/bench-venv/bin/pip install grad-cam captum moviepy stable-baselines3 gymnasium ale-py \\
        opencv-python-headless imageio imageio-ffmpeg pillow threadpoolctl
    /tmp/bench-venv/bin/pip install -e . --no-deps
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BEGIN = "<!-- benchmark:begin (written by scripts/benchmark.py; edit outside these markers) -->"
END = "<!-- benchmark:end -->"
ALGOS = ("ppo", "dqn")
TARGETS = {
    "p1": 1.2,  # explain / predict, at most
    "gradcam": 3.0,  # pytorch-grad-cam / rlcam, at least
    "captum": 2.0,  # Captum / rlcam, at least
    "p2": 1.3,  # record / plain recorded rollout, at most
    "p3_mb": 50.0,  # peak-RSS growth from the short to the long run, at most
    "p4": 4.0,  # map throughput at 8 envs / at 1 env, at least
}
METHOD_LABELS = {
    "predict": "SB3 `model.predict(obs, deterministic=True)` (no map)",
    "rlcam": "rlcam `Explainer.explain` (action + map)",
    "naive": "naive: autograd from the input, `loss.backward()` into parameters",
    "gradcam": "pytorch-grad-cam `GradCAM` (action from its own forward)",
    "captum": "Captum `LayerGradCam` (+ a forward for the action)",
}


# --- pure helpers: timings -> tables (tested in tests/test_benchmark_script.py) ------------------


def ratios(times: dict[str, float], baseline: str) -> dict[str, float]:
    """Each entry divided by the baseline's: ``{name: t / t_baseline}``."""
    base = times[baseline]
    return {name: t / base for name, t in times.items()}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile), interpolated."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return q1, q2, q3


def paired_ratio(samples: dict[str, list[float]], num: str, den: str) -> tuple[float, float, float]:
    """Quartiles of ``num / den`` taken round by round: each round timed both under the same load."""
    return quartiles([a / b for a, b in zip(samples[num], samples[den], strict=True)])


def fmt_ratio(q: tuple[float, float, float]) -> str:
    """``median (p25-p75)``."""
    return f"{q[1]:.2f} ({q[0]:.2f}-{q[2]:.2f})"


def met(value: float, target: float, at_most: bool) -> str:
    """``met`` or ``missed`` for ``value`` against ``target`` (an upper bound when ``at_most``)."""
    ok = value <= target if at_most else value >= target
    return "met" if ok else "missed"


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table; floats keep the precision they were formatted with by the caller."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def calls_rows(samples: dict[str, list[float]], baseline: str = "predict", versus: str = "rlcam") -> list[list[str]]:
    """Rows ``[method, median ms per call, x baseline, x versus]`` from per-round seconds per call.

    The ratios are medians of the per-round ratios (paired), not ratios of the medians.
    """
    rows = []
    for name, seconds in samples.items():
        to_versus = f"{paired_ratio(samples, name, versus)[1]:.2f}" if versus in samples else "-"
        ms = statistics.median(seconds) * 1e3
        rows.append(
            [METHOD_LABELS.get(name, name), f"{ms:.2f}", f"{paired_ratio(samples, name, baseline)[1]:.2f}", to_versus]
        )
    return rows


def throughput_rows(samples: dict[int, list[float]]) -> list[list[str]]:
    """Rows ``[n_envs, env steps/s, x one env]`` from per-round seconds per call of a batch of n envs."""
    one = min(samples)
    rows = []
    for n in sorted(samples):
        rate = n / statistics.median(samples[n])
        gain = quartiles([n * t1 / tn for t1, tn in zip(samples[one], samples[n], strict=True)])[1]  # paired
        rows.append([str(n), f"{rate:.0f}", f"{gain:.2f}"])
    return rows


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the markers replaced by ``block`` (appended if no markers)."""
    generated = f"{BEGIN}\n{block.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + generated + rest.split(END, 1)[1]
    return text.rstrip() + "\n\n" + generated + "\n" if text.strip() else generated + "\n"


# --- measuring -----------------------------------------------------------------------------------


def interleaved(
    fns: dict[str, Callable[[object], object]], inputs: list, repeats: int, calls: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per round of ``calls`` calls each.

    Rounds are short and the order rotates every round, so a change in background load hits every
    function alike; ratios are then taken round by round (``paired_ratio``).
    """
    names = list(fns)
    for name in names:
        for i in range(warmup):
            fns[name](inputs[i % len(inputs)])
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            started = time.perf_counter()
            for i in range(calls):
                fn(inputs[i % len(inputs)])
            samples[name].append((time.perf_counter() - started) / calls)
    return samples


def profile_top(fn: Callable[[], object], calls: int, top: int = 8) -> list[dict]:
    """cProfile ``calls`` runs of ``fn``: the functions with the most own time, in ms per call."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    return summarise(profiler, calls, top)


def summarise(profiler: cProfile.Profile, per: int, top: int = 8) -> list[dict]:
    """``[{total_ms}, {function, ms, share, ncalls}...]``: own time per unit of work (a call, a step)."""
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = []
    for (filename, line, func), (_, ncalls, tottime, _cumtime, _) in stats.stats.items():
        where = func if filename == "~" else f"{func} ({Path(filename).name}:{line})"
        rows.append(dict(function=where, ms=tottime * 1e3 / per, share=tottime / total, ncalls=ncalls / per))
    rows.sort(key=lambda r: -r["ms"])
    return [dict(total_ms=total * 1e3 / per)] + rows[:top]


def versions() -> dict[str, str]:
    import gymnasium
    import stable_baselines3
    import torch

    import rlcam

    found = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        stable_baselines3=stable_baselines3.__version__,
        gymnasium=gymnasium.__version__,
        numpy=np.__version__,
        rlcam=rlcam.__version__,
        interpreter=sys.executable,
    )
    for module, key in (("pytorch_grad_cam", "grad-cam"), ("captum", "captum"), ("moviepy", "moviepy")):
        try:
            from importlib.metadata import version

            __import__(module)
            found[key] = version(key)
        except Exception:  # not installed in this interpreter
            pass
    return found


# --- the agents and inputs -----------------------------------------------------------------------


def build_agents(directory: Path) -> dict[str, Path]:
    """Untrained NatureCNN PPO and DQN on Breakout's spaces, saved as SB3 zips (seed 0)."""
    from stable_baselines3 import DQN, PPO

    from rlcam.envs import make_env

    venv, _ = make_env("Breakout", n_envs=1, seed=0)
    try:
        paths = {"ppo": directory / "ppo.zip", "dqn": directory / "dqn.zip"}
        PPO("CnnPolicy", venv, seed=0, device="cpu").save(paths["ppo"])
        # A small replay buffer: DQN's default (1M Atari frames) would try to reserve tens of GB.
        DQN("CnnPolicy", venv, seed=0, device="cpu", buffer_size=1000).save(paths["dqn"])
    finally:
        venv.close()
    return paths


def sample_obs(n_envs: int = 8, batches: int = 16, skip: int = 40, seed: int = 0) -> list[np.ndarray]:
    """Real Breakout observations ``(n_envs, 4, 84, 84)`` uint8 from a seeded random-action rollout."""
    from rlcam.envs import make_env

    venv, _ = make_env("Breakout", n_envs=n_envs, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    try:
        obs = venv.reset()
        for step in range(skip + batches):
            if step >= skip:
                out.append(obs.copy())
            obs, *_ = venv.step(rng.integers(venv.action_space.n, size=n_envs))
    finally:
        venv.close()
    return out


def score_net(policy, algo: str):
    """The SB3 policy as the ``model(x) -> scores (N, A)`` the peers take: logits (PPO) or Q-values (DQN)."""
    from torch import nn

    class ScoreNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, x):  # x (N, 4, 84, 84) uint8 -> (N, A); SB3 scales the pixels itself
            if algo == "dqn":
                return self.policy.q_net(x)
            latent = self.policy.mlp_extractor.forward_actor(self.policy.extract_features(x))
            return self.policy.action_net(latent)

    return ScoreNet()


class NaiveGradCam:
    """The textbook recipe: forward with autograd from the input, ``backward()`` into every parameter."""

    def __init__(self, net, layer):
        self.net = net
        self.acts = None
        self.handle = layer.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        if output.requires_grad:  # not under no_grad
            output.retain_grad()
        self.acts = output

    def __call__(self, obs: np.ndarray):
        import torch
        import torch.nn.functional as F

        x = torch.as_tensor(obs)
        self.net.zero_grad(set_to_none=True)
        scores = self.net(x)
        actions = scores.argmax(dim=1)
        scores.gather(1, actions[:, None]).sum().backward()
        acts, grads = self.acts, self.acts.grad
        cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)).detach()
        on_input = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return actions.numpy(), cam.numpy(), on_input.numpy()

    def close(self):
        self.handle.remove()


def peer_gradcam(net, layer):
    """pytorch-grad-cam as its README uses it; the action is read from the forward it ran."""
    import torch
    from pytorch_grad_cam import GradCAM

    cam = GradCAM(model=net, target_layers=[layer])

    def run(obs: np.ndarray):
        x = torch.as_tensor(obs)
        maps = cam(input_tensor=x, targets=None)  # (N, 84, 84), min-max normalised, cv2-resized
        return cam.outputs.argmax(dim=1).numpy(), maps

    def raw_map(obs: np.ndarray) -> np.ndarray:
        """Its map at layer resolution, before normalisation and resizing, by its own code."""
        run(obs)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        return np.maximum(cam.get_cam_image(None, layer, None, acts, grads), 0)

    return cam, run, raw_map


def peer_captum(net, layer):
    """Captum's LayerGradCam needs the target: a no-grad forward for the action comes first."""
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    method = LayerGradCam(net, layer)

    def attribute(obs: np.ndarray):
        x = torch.as_tensor(obs)
        with torch.no_grad():
            actions = net(x).argmax(dim=1)
        return x, actions, method.attribute(x, target=actions, relu_attributions=True)  # (N, 1, h, w)

    def run(obs: np.ndarray):
        x, actions, attr = attribute(obs)
        maps = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), "bilinear")[:, 0]
        return actions.numpy(), maps.detach().numpy()

    def raw_map(obs: np.ndarray) -> np.ndarray:
        return attribute(obs)[2][:, 0].detach().numpy()

    return run, raw_map


def max_rel_diff(reference: np.ndarray, other: np.ndarray) -> float:
    """max |other - reference| / max |reference|, worst over the samples of the batch (axis 0)."""
    worst = 0.0
    for ref, oth in zip(reference, other, strict=True):
        scale = float(np.abs(ref).max())
        diff = float(np.abs(oth - ref).max())
        worst = max(worst, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf")))
    return worst


def minmax(maps: np.ndarray) -> np.ndarray:
    """Per-map min-max normalisation, as pytorch-grad-cam displays maps."""
    low = maps.min(axis=(1, 2), keepdims=True)
    return (maps - low) / (1e-7 + (maps - low).max(axis=(1, 2), keepdims=True))


# --- parts (each runs in its own process and prints JSON) ----------------------------------------


def part_calls(args) -> dict:
    """P1 and the peers: per-call cost of the action and its map, batch 1 and 8, PPO and DQN."""
    import torch

    from rlcam import Explainer, load_agent

    torch.set_num_threads(1)
    agent_dir = Path(args.agent_dir)
    try:
        import captum  # noqa: F401
        import pytorch_grad_cam  # noqa: F401

        with_peers = True
    except ImportError:
        with_peers = False
    batches = sample_obs()
    repeats, calls, warmup = (15, 3, 10) if args.quick else (40, 3, 20)
    result = dict(versions=versions(), peers=with_peers, repeats=repeats, calls=calls, rows=[], agreement=[])
    result["profiles"] = {}
    for algo in ALGOS:
        path = agent_dir / f"{algo}.zip"
        # One copy of the agent per method: a hook one library leaves on a layer must not run
        # (and cost) inside another's forward. The weights are the same file's.
        copies = {name: load_agent(path) for name in ("predict", "rlcam", "naive", "gradcam", "captum")}
        explainer = Explainer(copies["rlcam"])
        layer_name = explainer.layer_name
        nets = {name: score_net(agent.policy, algo) for name, agent in copies.items()}
        layers = {name: agent.policy.get_submodule(layer_name) for name, agent in copies.items()}
        naive = NaiveGradCam(nets["naive"], layers["naive"])
        fns = {
            "predict": lambda obs, m=copies["predict"].model: m.predict(obs, deterministic=True),
            "rlcam": explainer.explain,
            "naive": naive,
        }
        cleanup = [naive.close]
        if with_peers:
            cam, fns["gradcam"], gradcam_raw = peer_gradcam(nets["gradcam"], layers["gradcam"])
            cleanup.append(cam.activations_and_grads.release)
            fns["captum"], captum_raw = peer_captum(nets["captum"], layers["captum"])
        with explainer:
            for batch in (1, 8):
                inputs = [b[:batch] for b in batches]
                samples = interleaved(fns, inputs, repeats, calls, warmup)
                result["rows"].append(dict(algo=algo, batch=batch, samples=samples))
                if paired_ratio(samples, "rlcam", "predict")[1] > TARGETS["p1"]:
                    n = 50 if args.quick else 200
                    result["profiles"][f"{algo} batch {batch}"] = {
                        name: profile_top(lambda f=fns[name], o=inputs[0]: f(o), n) for name in ("rlcam", "predict")
                    }
            # Correctness before speed: the same maps from every implementation, at layer resolution.
            obs = batches[-1]
            mine = explainer.explain(obs)
            checks = {"naive": lambda o, f=naive: f(o)[1]}
            if with_peers:
                checks.update(gradcam=gradcam_raw, captum=captum_raw)
            for name, raw in checks.items():
                theirs = raw(obs)
                entry = dict(algo=algo, method=name, batch=len(obs), max_rel_diff=max_rel_diff(mine.cam, theirs))
                entry["actions_equal"] = bool(np.array_equal(fns[name](obs)[0], mine.actions))
                entry["nonzero_maps"] = int((mine.cam.reshape(len(obs), -1).max(axis=1) > 0).sum())
                if name == "gradcam":  # its display output: min-max normalised, resized by cv2
                    shown = fns[name](obs)[1]
                    entry["display_max_abs_diff"] = float(np.abs(shown - minmax(mine.cam_input)).max())
                elif name == "captum":
                    entry["display_max_rel_diff"] = max_rel_diff(mine.cam_input, fns[name](obs)[1])
                result["agreement"].append(entry)
        for close in cleanup:
            close()
    return result


def _time_steps(on_first: list, on_last: list):
    """An ``on_step`` callback noting when the first and the latest step finished."""

    def on_step(done, total):
        now = time.perf_counter()
        if done == 1:
            on_first.append(now)
        on_last[:] = [now, done]

    return on_step


def rollout_plain(agent_path: Path, algo: str, steps: int, seed: int, video: str | None, tmp: Path) -> dict:
    """A plain SB3 rollout (``predict`` + ``step``), optionally recording the raw frames."""
    from stable_baselines3 import DQN, PPO

    from rlcam.envs import make_env

    started = time.perf_counter()
    model = {"ppo": PPO, "dqn": DQN}[algo].load(agent_path, device="cpu")
    venv, _ = make_env("Breakout", n_envs=1, seed=seed)
    if video == "vecvideorecorder":
        from stable_baselines3.common.vec_env import VecVideoRecorder

        venv = VecVideoRecorder(venv, str(tmp), record_video_trigger=lambda s: s == 0, video_length=steps)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):  # moviepy's progress bar
        obs = venv.reset()
        writer = None
        if video == "ffmpeg":  # imageio-ffmpeg's defaults (libx264, quality 5), as a user would write it
            import imageio_ffmpeg

            frame = venv.get_images()[0]  # (210, 160, 3) RGB
            size = (frame.shape[1], frame.shape[0])
            writer = imageio_ffmpeg.write_frames(str(tmp / "plain.mp4"), size, fps=30, macro_block_size=2)
            writer.send(None)
            writer.send(np.ascontiguousarray(frame))
        first = None
        for step in range(steps):
            action, _ = model.predict(obs, deterministic=True)
            obs, _, _, _ = venv.step(action)
            if writer is not None:
                writer.send(np.ascontiguousarray(venv.get_images()[0]))
            if step == 0:
                first = time.perf_counter()
        last = time.perf_counter()
        venv.close()  # VecVideoRecorder encodes its frames here (or at the last step)
        if writer is not None:
            writer.close()
    return dict(seconds=time.perf_counter() - started, loop_steps_per_s=(steps - 1) / (last - first))


def record_run(agent_path: Path, steps: int, seed: int, tmp: Path, n_envs: int = 1, scale: int = 3) -> dict:
    """``rlcam record`` through the Python API: maps, annotated MP4 and trace."""
    from rlcam import RecordConfig, record

    first: list = []
    last: list = []
    cfg = RecordConfig(
        agent=agent_path,
        env="Breakout",
        steps=steps,
        seed=seed,
        n_envs=n_envs,
        scale=scale,
        out=tmp / "rlcam.mp4",
        overwrite=True,
    )
    started = time.perf_counter()
    result = record(cfg, on_step=_time_steps(first, last))
    seconds = time.perf_counter() - started
    assert result.steps == steps, result
    return dict(seconds=seconds, loop_steps_per_s=(last[1] - 1) / (last[0] - first[0]))


def with_cpu_times(fn: Callable[[], dict]) -> dict:
    """``fn()``'s result plus the CPU seconds of this process and of its waited-for children (ffmpeg)."""
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    result = fn()
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = [(a.ru_utime + a.ru_stime) - (b.ru_utime + b.ru_stime) for a, b in zip(after, before, strict=True)]
    return {**result, "cpu_self_s": cpu[0], "cpu_children_s": cpu[1]}


def profile_record_loop(agent_path: Path, steps: int, tmp: Path) -> list[dict]:
    """cProfile of ``record``'s loop alone (from the end of step 1 to the end of the last step), per step."""
    from rlcam import RecordConfig, record

    profiler = cProfile.Profile()

    def on_step(done, total):
        if done == 1:
            profiler.enable()
        elif done == total:
            profiler.disable()

    record(RecordConfig(agent=agent_path, env="Breakout", steps=steps, out=tmp / "profile.mp4"), on_step=on_step)
    return summarise(profiler, steps - 1, top=12)


def part_e2e(args) -> dict:
    """P2: record vs plain rollouts (no video, raw frames via imageio-ffmpeg, VecVideoRecorder)."""
    import torch

    torch.set_num_threads(1)
    agent_path = Path(args.agent_dir) / "ppo.zip"
    steps = 150 if args.quick else 300
    repeats = 3
    variants: dict[str, Callable[[Path, int], dict]] = {
        "rlcam": lambda tmp, n: record_run(agent_path, n, 0, tmp),
        "rlcam_scale1": lambda tmp, n: record_run(agent_path, n, 0, tmp, scale=1),
        "plain": lambda tmp, n: rollout_plain(agent_path, "ppo", n, 0, None, tmp),
        "ffmpeg": lambda tmp, n: rollout_plain(agent_path, "ppo", n, 0, "ffmpeg", tmp),
    }
    try:
        import moviepy  # noqa: F401

        variants["vecvideorecorder"] = lambda tmp, n: rollout_plain(agent_path, "ppo", n, 0, "vecvideorecorder", tmp)
    except ImportError:
        pass
    names = list(variants)
    for name in names:  # warm-up: imports, ALE's ROM load and ffmpeg's first start are paid here
        with tempfile.TemporaryDirectory() as tmp:
            variants[name](Path(tmp), 20)
    samples: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            with tempfile.TemporaryDirectory() as tmp:
                samples[name].append(with_cpu_times(lambda v=variants[name], t=Path(tmp): v(t, steps)))
    result = dict(versions=versions(), steps=steps, repeats=repeats)
    result["wall_samples"] = {name: [run["seconds"] for run in runs] for name, runs in samples.items()}
    for key in ("seconds", "loop_steps_per_s", "cpu_self_s", "cpu_children_s"):
        result[key] = {name: statistics.median(run[key] for run in runs) for name, runs in samples.items()}
    baseline = "vecvideorecorder" if "vecvideorecorder" in variants else "ffmpeg"
    if paired_ratio(result["wall_samples"], "rlcam", baseline)[1] > TARGETS["p2"]:
        with tempfile.TemporaryDirectory() as tmp:
            n = 100 if args.quick else 300
            result["profile"] = profile_record_loop(agent_path, n, Path(tmp))
            result["profile_steps"] = n
    return result


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def part_memory(args) -> dict:
    """P3, one run: peak RSS of this process after recording ``--steps`` steps."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        before = _status_kb("VmHWM")
        run = record_run(Path(args.agent_dir) / "ppo.zip", args.steps, 0, Path(tmp))
        return dict(
            steps=args.steps,
            seconds=run["seconds"],
            vmhwm_mb=_status_kb("VmHWM") / 1024,
            vmhwm_before_mb=before / 1024,
        )


def part_scale(args) -> dict:
    """P4: env steps explained per second for 1, 2, 4, 8 envs; the explain call alone and the record loop."""
    import torch

    from rlcam import Explainer, load_agent

    torch.set_num_threads(1)
    agent_path = Path(args.agent_dir) / "ppo.zip"
    counts = (1, 2, 4, 8)
    batches = sample_obs(n_envs=max(counts))
    repeats, calls, warmup = (15, 3, 10) if args.quick else (40, 3, 20)
    with Explainer(load_agent(agent_path)) as explainer:
        fns = {n: (lambda obs, n=n: explainer.explain(obs[:n])) for n in counts}
        samples = interleaved(fns, batches, repeats, calls, warmup)
        result = dict(versions=versions(), repeats=repeats, calls=calls, explain_samples=samples)
        if quartiles([8 * a / b for a, b in zip(samples[1], samples[8], strict=True)])[1] < TARGETS["p4"]:
            n = 50 if args.quick else 200
            result["profiles"] = {
                f"{k} env(s)": profile_top(lambda k=k: explainer.explain(batches[0][:k]), n) for k in (1, 8)
            }
    steps = 60 if args.quick else 100
    loop: dict[int, list[float]] = {n: [] for n in counts}
    for r in range(3):
        for n in counts[r % 4 :] + counts[: r % 4]:
            with tempfile.TemporaryDirectory() as tmp:
                loop[n].append(n * record_run(agent_path, steps, 0, Path(tmp), n_envs=n)["loop_steps_per_s"])
    result["record_steps"] = steps
    result["record_env_steps_per_s"] = {n: statistics.median(v) for n, v in loop.items()}
    return result


PARTS = {"calls": part_calls, "e2e": part_e2e, "memory": part_memory, "scale": part_scale}


# --- the orchestrator ----------------------------------------------------------------------------


def run_part(python: str, part: str, agent_dir: Path, quick: bool, extra: list[str] | None = None) -> dict:
    """Run ``--part`` in a subprocess of ``python`` and read its JSON back."""
    cmd = [python, str(Path(__file__).resolve()), "--part", part, "--agent-dir", str(agent_dir)]
    cmd += (["--quick"] if quick else []) + (extra or [])
    print(f"[benchmark] {part}: {' '.join(cmd[2:])}" + (f" ({python})" if python != sys.executable else ""), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"part {part} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    print(f"[benchmark] {part} done in {result['wall_s']:.0f} s", flush=True)
    return result


def machine() -> dict:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(Exception):
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    return dict(cpu=model, cores=os.cpu_count(), load=os.getloadavg(), system=platform.platform())


def short(method: str) -> str:
    """A method's label without its parenthesised note."""
    return METHOD_LABELS[method].split(" (")[0]


def render_calls(result: dict, title: str, where: str) -> tuple[list[str], list[list[str]]]:
    """P1 (and the peers when present): tables per agent and batch, map agreement, verdicts."""
    v = result["versions"]
    lines = [
        f"### {title}",
        "",
        f"torch {v['torch']}, SB3 {v['stable_baselines3']}"
        + (f", grad-cam {v['grad-cam']}, captum {v['captum']}" if result["peers"] else "")
        + f"; one torch thread; after a warm-up, {result['repeats']} rounds in which each method makes "
        f"{result['calls']} calls, in an order rotating every round. ms: median over the rounds; ratios: median of "
        "the ratios taken round by round (paired). Each method runs on its own copy of the agent (same zip), "
        "so no library's hooks run inside another's forward.",
        "",
    ]
    verdicts = []
    for row in result["rows"]:
        s = row["samples"]
        tag = f"{row['algo'].upper()} batch {row['batch']}, {where}"
        lines += [f"**{row['algo'].upper()}, batch {row['batch']}**", ""]
        lines += [markdown_table(["per call", "ms", "x predict", "x rlcam"], calls_rows(s)), ""]
        q = paired_ratio(s, "rlcam", "predict")
        verdicts.append([f"P1 rlcam / predict <= {TARGETS['p1']}", tag, fmt_ratio(q), met(q[1], TARGETS["p1"], True)])
        for peer in ("gradcam", "captum"):
            if peer in s:
                q = paired_ratio(s, peer, "rlcam")
                verdicts.append(
                    [f"{short(peer)} / rlcam >= {TARGETS[peer]}", tag, fmt_ratio(q), met(q[1], TARGETS[peer], False)]
                )
    if result["agreement"]:
        lines += [
            "Maps against rlcam's, same batch of 8 observations: at layer resolution (7x7, raw values in the "
            "score's units; max |theirs - rlcam| / max |rlcam|, worst sample), and as each shows it on the input.",
            "",
        ]
        rows = []
        for a in result["agreement"]:
            shown = "-"
            if "display_max_abs_diff" in a:
                shown = f"min-max normalised, cv2 resize: max abs diff {a['display_max_abs_diff']:.2g} (of 1)"
            elif "display_max_rel_diff" in a:
                shown = f"bilinear 84x84: max rel diff {a['display_max_rel_diff']:.2g}"
            same = "yes" if a["actions_equal"] else "NO"
            rows.append(
                [
                    a["algo"].upper(),
                    short(a["method"]),
                    f"{a['max_rel_diff']:.2g}",
                    same,
                    f"{a['nonzero_maps']}/{a['batch']}",
                    shown,
                ]
            )
        headers = [
            "agent",
            "implementation",
            "max rel diff (7x7)",
            "same actions",
            "non-zero maps",
            "on the input grid",
        ]
        lines += [markdown_table(headers, rows), ""]
    for label, pair in result.get("profiles", {}).items():
        for method, top in pair.items():
            lines += render_profile(top, f"Profile ({where}), {label}, {short(method)}")
    return lines, verdicts


def render_profile(top: list[dict], label: str, unit: str = "call") -> list[str]:
    lines = [f"{label}: {top[0]['total_ms']:.2f} ms per {unit} in all (cProfile); the most own time:", ""]
    rows = [
        [r["function"].replace("|", "\\|"), f"{r['ms']:.3f}", f"{r['share']:.0%}", f"{r['ncalls']:g}"] for r in top[1:]
    ]
    return lines + [markdown_table(["function", f"ms per {unit}", "share", f"calls per {unit}"], rows), ""]


E2E_LABELS = {
    "rlcam": "rlcam `record` (maps, annotated 3x MP4, trace)",
    "rlcam_scale1": "rlcam `record`, `scale=1` (frame not upscaled)",
    "vecvideorecorder": "SB3 rollout + `VecVideoRecorder` (moviepy; raw frames)",
    "ffmpeg": "SB3 rollout + raw frames to MP4 with imageio-ffmpeg",
    "plain": "SB3 rollout, no video",
}


def render_e2e(e2e: dict) -> tuple[list[str], list[list[str]]]:
    baseline = "vecvideorecorder" if "vecvideorecorder" in e2e["seconds"] else "ffmpeg"
    sec = e2e["seconds"]
    runs = e2e["wall_samples"]
    rows = [
        [
            E2E_LABELS[name],
            f"{sec[name]:.2f}",
            f"{paired_ratio(runs, name, baseline)[1]:.2f}",
            f"{paired_ratio(runs, name, 'plain')[1]:.2f}",
            f"{e2e['loop_steps_per_s'][name]:.0f}",
            f"{e2e['cpu_self_s'][name]:.2f}",
            f"{e2e['cpu_children_s'][name]:.2f}",
        ]
        for name in E2E_LABELS
        if name in sec
    ]
    v = e2e["versions"]
    lines = [
        "### P2: end to end",
        "",
        f"Untrained PPO, Breakout, {e2e['steps']} steps, seed 0, one torch thread, same env (`rlcam.envs.make_env`); "
        f"median of {e2e['repeats']} runs each, interleaved, after a warm-up run of each. Wall time includes "
        "loading the agent, making the env and closing the video. CPU: this process, and its children "
        f"(ffmpeg). torch {v['torch']}"
        + (f", moviepy {v['moviepy']}" if "moviepy" in v else " (moviepy not installed: baseline is imageio-ffmpeg)")
        + f"; interpreter `{v['interpreter']}`.",
        "",
        markdown_table(["run", "wall s", f"x {baseline}", "x no video", "loop steps/s", "CPU s", "ffmpeg CPU s"], rows),
        "",
    ]
    q = paired_ratio(runs, "rlcam", baseline)
    verdicts = [
        [
            f"P2 record / {baseline} <= {TARGETS['p2']}",
            f"{e2e['steps']} steps",
            fmt_ratio(q),
            met(q[1], TARGETS["p2"], True),
        ]
    ]
    if "profile" in e2e:
        label = (
            f"Profile of `record`'s loop, {e2e['profile_steps']} steps (setup and closing left out; "
            "ffmpeg's own CPU is not in it, only the time spent waiting to hand it frames)"
        )
        lines += render_profile(e2e["profile"], label, unit="step")
    return lines, verdicts


def render_memory(mem: list[dict]) -> tuple[list[str], list[list[str]]]:
    first, last = mem
    growth = last["vmhwm_mb"] - first["vmhwm_mb"]
    per_k = growth / (last["steps"] - first["steps"]) * 1000
    rows = [
        [f"{m['steps']}", f"{m['vmhwm_mb']:.0f}", f"{m['vmhwm_before_mb']:.0f}", f"{m['seconds']:.0f}"] for m in mem
    ]
    lines = [
        "### P3: memory",
        "",
        "`record` of the untrained PPO to MP4 + trace, each length in its own process; peak RSS (VmHWM) of that "
        "process, and its peak before recording (imports done). ffmpeg is a separate process that streams.",
        "",
        markdown_table(["steps", "peak RSS MB", "peak before record MB", "wall s"], rows),
        "",
        f"Growth from {first['steps']} to {last['steps']} steps: {growth:+.1f} MB ({per_k:+.2f} MB per 1000 steps; "
        f"{per_k * 9:+.1f} MB if extended linearly to 1k -> 10k).",
        "",
    ]
    verdict = [
        f"P3 peak-RSS growth <= {TARGETS['p3_mb']:.0f} MB",
        f"{first['steps']} -> {last['steps']} steps",
        f"{growth:+.1f} MB",
        met(growth, TARGETS["p3_mb"], True),
    ]
    return lines, [verdict]


def render_scale(scale: dict) -> tuple[list[str], list[list[str]]]:
    explain = {int(k): v for k, v in scale["explain_samples"].items()}
    loop = {int(k): v for k, v in scale["record_env_steps_per_s"].items()}
    loop_rows = [[str(n), f"{rate:.0f}", f"{rate / loop[1]:.2f}"] for n, rate in sorted(loop.items())]
    rows = [a + b[1:] for a, b in zip(throughput_rows(explain), loop_rows, strict=True)]
    lines = [
        "### P4: scale",
        "",
        f"Env steps explained per second, untrained PPO, one torch thread. `explain` alone on batches of n real "
        f"observations: {scale['repeats']} rounds of {scale['calls']} calls per env count, in a rotating order; "
        "steps/s from the median time, the gain as the median of the round-by-round gains. "
        f"The record loop (`record` with `n_envs=n`, first to last step, the video shows env 0): median of 3 runs "
        f"of {scale['record_steps']} steps.",
        "",
        markdown_table(["n_envs", "explain env steps/s", "x 1 env", "record loop env steps/s", "x 1 env"], rows),
        "",
    ]
    q = quartiles([8 * a / b for a, b in zip(explain[1], explain[8], strict=True)])
    verdicts = [
        [
            f"P4 explain throughput 8 envs / 1 env >= {TARGETS['p4']}",
            "explain alone",
            fmt_ratio(q),
            met(q[1], TARGETS["p4"], False),
        ]
    ]
    for label, top in scale.get("profiles", {}).items():
        lines += render_profile(top, f"Profile of `explain`, {label}")
    return lines, verdicts


def render(results: dict, info: dict) -> str:
    """The generated block of docs/benchmarks.md."""
    sections = [render_calls(results["calls"], "P1: per-step explanation cost (project venv)", "project venv")]
    if results.get("peers"):
        sections.append(render_calls(results["peers"], "P1 beside the peers (peers venv, one process)", "peers venv"))
    sections += [render_e2e(results["e2e"]), render_memory(results["memory"]), render_scale(results["scale"])]
    verdicts = [v for _, vs in sections for v in vs]
    lines = [
        f"Run on {info['date']}: `{info['command']}`.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['system']}); load average "
        f"{info['load'][0]:.2f} at the start.",
        "",
        "### Targets",
        "",
        markdown_table(["target", "where", "measured", "verdict"], verdicts),
        "",
        "Ratios are paired: taken round by round (P1, P4) or run by run (P2) under the same load, then the "
        "median, with the 25th-75th percentiles in brackets. P3 is one run per length.",
        "",
    ]
    for section, _ in sections:
        lines += section
    return "\n".join(lines)


# --- rlcam audit: jobs per minute (issue 16) -----------------------------------------------------

AUDIT_BEGIN = "<!-- benchmark:audit:begin (written by scripts/benchmark.py --audit; edit outside these markers) -->"
AUDIT_END = "<!-- benchmark:audit:end -->"


def audit_rates(walls: dict[int, list[float]], jobs: int) -> dict[int, dict[str, float]]:
    """Jobs per minute for each worker count from the wall times of its rounds (median round), and the
    ratio to 1 worker."""
    rates = {w: jobs / statistics.median(times) * 60.0 for w, times in walls.items()}
    one = rates.get(1)
    return {w: {"jobs_per_min": r, "x1": r / one if one else float("nan")} for w, r in rates.items()}


def cluster_per_hour(
    job_seconds: float, machines: int = 100, workers_per_machine: int = 2, scaling: float = 1.0
) -> float:
    """Jobs an hour on ``machines`` machines, each running ``workers_per_machine`` jobs at once at ``scaling``
    of one worker's rate, for jobs that take ``job_seconds`` of one worker."""
    return machines * workers_per_machine * scaling * 3600.0 / job_seconds


def measure_audit(agent: Path, jobs: int, steps: int, rounds: int, ray: bool) -> dict:
    """Wall time of ``jobs`` jobs of ``steps`` Breakout steps each on 1 and 2 pool workers (and Ray).

    Each executor is warmed up first (one job per worker: the imports), then timed on ``executor.run``
    alone (the driver's CSV and summary are a fixed cost, timed once); rounds alternate the order of
    1 and 2 workers so a change in background load hits both. The rows' ``cpu_seconds`` give what a
    job costs on a free core, whatever else the machine was doing.
    """
    from rlcam import audit

    settings = audit.make_settings(env="Breakout", steps=steps)
    cks = audit.checkpoints([agent])
    walls: dict[int, list[float]] = {}
    job_s: dict[int, list[float]] = {}
    job_cpu: dict[int, list[float]] = {}
    warmups: dict[int, list[float]] = {}
    out: dict = {"jobs": jobs, "steps": steps, "rounds": rounds, "agent": str(agent)}
    with tempfile.TemporaryDirectory() as tmp:

        def timed(executor, key: int, tag: str) -> None:
            rows: list[dict] = []
            warm = audit.plan(cks, list(range(1000, 1000 + abs(key))), settings, Path(tmp) / f"{tag}-warm")
            started = time.perf_counter()
            executor.run(warm, lambda job, result, attempts: None)
            warmups.setdefault(key, []).append(time.perf_counter() - started)
            todo = audit.plan(cks, list(range(jobs)), settings, Path(tmp) / tag)
            started = time.perf_counter()
            executor.run(todo, lambda job, result, attempts: rows.append(result.row))
            walls.setdefault(key, []).append(time.perf_counter() - started)
            bad = [row["error"] for row in rows if row["status"] != "ok"]
            if bad:
                raise RuntimeError(f"audit jobs failed: {bad[0]}")
            job_s.setdefault(key, []).extend(row["seconds"] for row in rows)
            job_cpu.setdefault(key, []).extend(row["cpu_seconds"] for row in rows)

        for r in range(rounds):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                with audit.PoolExecutor(workers) as pool:
                    timed(pool, workers, f"pool{workers}-{r}")
        if ray:
            import ray as ray_module

            ray_module.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            try:
                for r in range(rounds):
                    timed(audit.RayExecutor(), -2, f"ray-{r}")  # key -2: Ray with 2 CPUs
            finally:
                ray_module.shutdown()
        # One real job: a whole game of the shipped agent with sampled actions, and the driver's fixed cost.
        with audit.PoolExecutor(1) as pool:
            started = time.perf_counter()
            game = audit.audit(cks, [0], audit.make_settings(env="Breakout", episodes=1), Path(tmp) / "game", pool)
            row = game.rows[0]
            out["game"] = dict(
                wall_s=time.perf_counter() - started,
                seconds=row["seconds"],
                cpu_seconds=row["cpu_seconds"],
                steps=row["steps"],
                score=row["return"],
            )
    out.update(walls=walls, job_seconds=job_s, job_cpu_seconds=job_cpu, warmups=warmups)
    return out


def render_audit(result: dict, info: dict) -> str:
    """The generated block of the audit throughput section."""

    def by_key(name: str) -> dict[int, list[float]]:
        return {int(k): v for k, v in result[name].items()}

    walls, job_s, job_cpu, warmups = (by_key(n) for n in ("walls", "job_seconds", "job_cpu_seconds", "warmups"))
    rates = audit_rates(walls, result["jobs"])
    names = {1: "process pool, 1 worker", 2: "process pool, 2 workers", -2: "Ray (local, 2 CPUs)"}
    rows = [
        [
            names[w],
            ", ".join(f"{t:.1f}" for t in walls[w]),
            f"{rates[w]['jobs_per_min']:.1f}",
            f"{rates[w]['x1']:.2f}",
            f"{statistics.median(job_s[w]):.2f}",
            f"{statistics.median(job_cpu[w]):.2f}",
            ", ".join(f"{t:.1f}" for t in warmups[w]),
        ]
        for w in (1, 2, -2)
        if w in walls
    ]
    game = result["game"]
    cpu_per_step = statistics.median(job_cpu[1]) / result["steps"]
    game_cpu = game["cpu_seconds"]
    lines = [
        f"Run on {info['date']}: `{info['command']}`. Machine: {info['cpu']}, {info['cores']} cores; load "
        f"average {info['load'][0]:.2f} at the start, {info['load_end'][0]:.2f} at the end. "
        + (info.get("note") or ""),
        "",
        f"{result['jobs']} jobs of {result['steps']} Breakout steps each (the shipped PPO, sampled actions, "
        f"trace and metrics, no video), {result['rounds']} round(s) per executor after a warm-up (its seconds: "
        "the workers' start and imports):",
        "",
        markdown_table(
            ["executor", "wall s per round", "jobs/min", "x 1 worker", "median job s", "median job CPU s", "warm-up s"],
            rows,
        ),
        "",
        f"A whole game as one job (`--episodes 1`, seed 0): {game['steps']} steps, score {game['score']:g}, "
        f"{game['seconds']:.1f} s in its worker ({game_cpu:.1f} s of CPU; {game['wall_s']:.1f} s for the whole "
        "`audit` call on a fresh pool: worker start, the job, results.csv and summary.html).",
        "",
        f"On paper: a job costs {cpu_per_step * 1000:.1f} ms of CPU a step here ({game_cpu:.1f} s for that game). "
        f"With the {rates[2]['x1']:.2f}x measured for 2 workers on this shared machine, 100 machines like it would "
        f"run about {cluster_per_hour(game['seconds'], 100, 1, rates[2]['x1']):,.0f} such games an hour; 100 machines "
        f"with 2 free cores each, two jobs at a time at the CPU cost, about {cluster_per_hour(game_cpu, 100, 2):,.0f}; "
        f"with 16 free cores each, about {cluster_per_hour(game_cpu, 100, 16):,.0f}. Jobs share nothing but the "
        "driver, which only writes a row per job (milliseconds) and, on a cluster without a shared disk, receives "
        "each trace (~0.3 MB per 1000 steps) and sends each checkpoint once per node (7-20 MB).",
    ]
    return "\n".join(lines)


def replace_audit_block(text: str, block: str) -> str:
    generated = f"{AUDIT_BEGIN}\n{block.rstrip()}\n{AUDIT_END}"
    if AUDIT_BEGIN in text and AUDIT_END in text:
        head, rest = text.split(AUDIT_BEGIN, 1)
        return head + generated + rest.split(AUDIT_END, 1)[1]
    return text.rstrip() + "\n\n## rlcam audit throughput\n\n" + generated + "\n"


def main_audit(args) -> int:
    """``--audit``: jobs per minute for 1 and 2 workers (and a local Ray when it is installed)."""
    import importlib.util

    info = machine()
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info["command"] = "python scripts/benchmark.py --audit" + (" --quick" if args.quick else "")
    info["note"] = args.note or ""
    agent = REPO / "agents" / "breakout_ppo.zip"
    jobs, steps, rounds = (4, 200, 1) if args.quick else (6, 500, 2)
    result = measure_audit(agent, jobs, steps, rounds, ray=importlib.util.find_spec("ray") is not None)
    info["load_end"] = os.getloadavg()
    block = render_audit(result, info)
    text = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(replace_audit_block(text, block))
    if args.json:
        args.json.write_text(json.dumps(dict(info=info, results=result), indent=1))
    print(block)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps (about 4 minutes here)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md", help="markdown file to update")
    parser.add_argument("--peers-python", help="python of a venv with grad-cam and captum (see the module docstring)")
    parser.add_argument(
        "--memory-steps",
        type=int,
        nargs=2,
        default=None,
        metavar=("SHORT", "LONG"),
        help="P3 run lengths (default 1000 10000, as the target states; --quick: 200 1000)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--agent-dir", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--audit", action="store_true", help="only rlcam audit's jobs per minute for 1 and 2 workers (own section)"
    )
    parser.add_argument("--note", help="with --audit: a sentence printed beside the figures (e.g. the machine's load)")
    args = parser.parse_args(argv)

    if args.audit:
        return main_audit(args)
    if args.part:
        print(json.dumps(PARTS[args.part](args)))
        return 0

    info = machine()
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shown = ["python scripts/benchmark.py"] + (["--quick"] if args.quick else [])
    if args.peers_python:
        shown += ["--peers-python", args.peers_python]
    if args.memory_steps:
        shown += ["--memory-steps", *map(str, args.memory_steps)]
    info["command"] = " ".join(shown)
    memory_steps = args.memory_steps or ((200, 1000) if args.quick else (1000, 10000))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        agent_dir = Path(tmp)
        build_agents(agent_dir)
        py = sys.executable
        results["calls"] = run_part(py, "calls", agent_dir, args.quick)
        if args.peers_python:
            results["peers"] = run_part(args.peers_python, "calls", agent_dir, args.quick)
        # VecVideoRecorder needs moviepy: run P2 where it imports (the peers venv has it).
        e2e_python = py
        if args.peers_python and "moviepy" not in results["calls"]["versions"]:
            e2e_python = args.peers_python
        results["e2e"] = run_part(e2e_python, "e2e", agent_dir, args.quick)
        results["memory"] = [run_part(py, "memory", agent_dir, args.quick, ["--steps", str(n)]) for n in memory_steps]
        results["scale"] = run_part(py, "scale", agent_dir, args.quick)
    block = render(results, info)
    out = args.out
    text = out.read_text() if out.exists() else ""
    out.write_text(replace_block(text, block))
    if args.json:
        args.json.write_text(json.dumps(dict(info=info, results=results), indent=1))
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
