"""``rlcam report``: one self-contained HTML page to inspect a recorded run step by step.

The page (``report_assets/``: plain canvas, no library, no network) gets the trace's raw maps and
draws everything itself: the frame with the map over it (normalisation, overlay and opacity
switchable live), the timeline, the step's panel, the moments worth a look. What it needs that a
trace does not hold is the game frames; they are rebuilt here by replaying the trace's actions in
its env from its seed, and the replay is checked step by step against what the trace recorded
(rewards, life losses, game ends, object positions, observations when stored), so frame k on the
page is the frame the agent saw at step k or the report is not written.

    trace (T, ...) + replayed frames (T, H, W, 3) -> payload (JSON, binary arrays in base64) -> HTML

Every policy family rlcam records is shown: discrete actions (a bar per action), continuous
ones (a bar per component within the action space's bounds, the signed map's "pushes it down"
side in the cool ramp, a timeline track per component), structured ones (a bar group per part),
actor + critics (Q(s, a) as the value), recurrent policies (memory vs pixels on the timeline) and
Dict observations: every image key side by side as the agent saw it (from the replay's
observations), the layer's key with its map and each other key with its map of the same score
(``key_cam_<key>``), all on one colour scale as in the video; each key's share of the score; and
each vector key's signed gradient x input per element (``attr_<key>``), a bar per ``key[i]``.

Frames travel as palette indices (Atari frames have at most 128 colours; RGB otherwise), in
chunks of ``FRAME_CHUNK`` steps, each chunk XOR-delta coded along time and deflated: 1000 Breakout
steps take ~0.1 MB. The browser inflates them with its built-in ``DecompressionStream``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlcam.colormap import LUT, LUT_DOWN
from rlcam.errors import RlcamError
from rlcam.geometry import Placement, stretch_matrix
from rlcam.norm import RUNNING_DECAY
from rlcam.video import PLACEMENT_META, load_trace

__all__ = ["ReportRun", "run_from_trace", "write_report", "page_html"]

ASSETS = Path(__file__).with_name("report_assets")
FRAME_CHUNK = 32
OBJECT_RADIUS = 10.0  # px on the raw frame counted as "on" an object (rlcam check's default)
MOMENTS_PER_KIND = 6
REQUIRED = ("cam", "action", "value", "reward", "done", "game_over")
# Probability bars (actor-critic policies) or Q-value bars (Q-networks), from the algorithm.
BAR_KIND = {"ppo": "prob", "a2c": "prob", "recurrentppo": "prob", "dqn": "q", "qrdqn": "q"}


@dataclass
class ReportRun:
    """One run as the page shows it: the arrays of one env (no env axis) and its frames.

    Attributes:
        label: what the page calls the run (the agent's file name by default).
        meta: the trace's meta.
        arrays: ``(T, ...)`` per-step arrays: the trace's keys for one env.
        frames: ``(T, H, W, 3)`` uint8 RGB, the env's frame when the agent acted at step k (what the video shows).
        notes: sentences the page shows about what this run lacks.
    """

    label: str
    meta: dict
    arrays: dict[str, np.ndarray]
    frames: np.ndarray
    notes: list[str] = field(default_factory=list)
    space: dict = field(default_factory=dict)
    """What the page needs of the env's spaces (``space_info``): bounds, part sizes, the image key."""
    key_frames: dict[str, np.ndarray] = field(default_factory=dict)
    """Dict observations: ``(T, H, W, 3)`` uint8 frames of each other image key the trace maps
    (``key_cam_<key>``), as the agent saw them; shown beside the main frame with their maps."""

    @property
    def steps(self) -> int:
        return len(self.arrays["action"])


def check_output(out: Path, overwrite: bool) -> None:
    """Fail before any work when ``out`` cannot become the report."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise RlcamError(f"the report path must end in .html, not {out.name!r}.")
    if out.is_dir():
        raise RlcamError(f"output {out} is a directory; give a file name.")
    if out.exists() and not overwrite:
        raise RlcamError(f"output {out} already exists; pass --overwrite to replace it.")
    if not out.parent.is_dir():
        raise RlcamError(f"output directory {out.parent} does not exist; create it first.")


# -- the run: trace + frames ------------------------------------------------------------------------


def run_from_trace(trace_path: str | os.PathLike[str], env_index: int = 0, label: str | None = None) -> ReportRun:
    """Load a trace for the page and rebuild its frames by a checked replay.

    Raises:
        RlcamError: the trace is missing, damaged or foreign, lacks what the page needs, or its env
            does not reproduce the recorded run (then its frames cannot be rebuilt).
    """
    path = Path(trace_path)
    meta, arrays, notes = trace_arrays(path, env_index)
    if meta.get("compare_mode") == "replay" and meta.get("compare_side") == 1:
        raise RlcamError(
            f"trace {path} holds the second agent's choices on the first agent's game ('rlcam compare' in replay "
            "mode), so it cannot be replayed alone; open the compare report, or report the first agent's trace."
        )
    frames, key_frames, space = replay_frames(meta, arrays, env_index, path)
    name = label or Path(str(meta.get("agent", path.stem))).name
    return ReportRun(name, meta, arrays, frames, notes, space, key_frames)


def trace_arrays(path: Path, env_index: int = 0) -> tuple[dict, dict[str, np.ndarray], list[str]]:
    """A trace's meta, its per-step arrays for one env (no env axis), and notes on what it lacks."""
    trace = load_trace(path, keys=None)
    meta = trace.meta
    lacking = [k for k in REQUIRED if k not in trace] + [
        k for k in ("env_id", "seed", "action_names", PLACEMENT_META) if k not in meta
    ]
    if lacking:
        raise RlcamError(
            f"trace {path} lacks {', '.join(lacking)}, which the report needs; record it again with 'rlcam record'."
        )
    n_envs = int(meta.get("n_envs", 1))
    if not 0 <= env_index < n_envs:
        raise RlcamError(f"--env-index must lie in 0..{n_envs - 1} for this trace of {n_envs} envs, not {env_index}.")
    arrays = {k: (v[:, env_index] if n_envs > 1 else v) for k, v in trace.arrays.items() if k != "cam_input"}
    if arrays["action"].ndim > 2:
        shape = arrays["action"].shape[1:]
        raise RlcamError(f"trace {path} has actions shaped {shape} per step; rlcam records flat vectors.")
    if len(arrays["action"]) == 0:
        raise RlcamError(f"trace {path} holds no steps.")
    notes = [f"recorded with a warning: {w}" for w in meta.get("warnings") or []]  # as the recorder said it
    if "action_values" not in arrays:
        notes.append(
            "This trace has no action_values (recorded before rlcam stored them): no probabilities or Q-values."
        )
    return meta, arrays, notes


def space_info(action_space, observation_space, layer: str) -> dict:
    """What the page needs of a run's spaces: a ``Box``'s bounds, a structured action's part sizes,
    a Dict observation's keys and the image key the map is on (``image_key``)."""
    from gymnasium import spaces

    info: dict = {}
    if isinstance(action_space, spaces.Box):
        info["low"] = [float(v) for v in np.asarray(action_space.low, np.float64).reshape(-1)]
        info["high"] = [float(v) for v in np.asarray(action_space.high, np.float64).reshape(-1)]
    elif isinstance(action_space, spaces.MultiDiscrete):
        info["sizes"] = [int(n) for n in np.asarray(action_space.nvec).reshape(-1)]
    elif isinstance(action_space, spaces.MultiBinary):
        info["sizes"] = [2] * int(np.prod(action_space.shape))
    if isinstance(observation_space, spaces.Dict):
        from rlcam.explainer import _image_key

        info["input_names"] = list(observation_space.spaces)
        info["image_key"] = _image_key(observation_space, layer)
    return info


def other_image_keys(space: dict, arrays: dict[str, np.ndarray]) -> list[str]:
    """A Dict observation's image keys, other than the layer's, that the trace has maps of
    (``key_cam_<key>``), in the space's order: the panes beside the main frame."""
    mapped = space.get("image_key")
    return [k for k in space.get("input_names", []) if k != mapped and f"key_cam_{k}" in arrays]


def replay_frames(
    meta: dict, arrays: dict[str, np.ndarray], env_index: int, source: Path
) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """``(T, H, W, 3)`` frames of env ``env_index``, by stepping its env with the recorded actions,
    the other image keys' frames (Dict observations) and the env's ``space_info``.

    The trace holds the exact actions the env was given (continuous or sampled ones too), so the
    replay is exact. Every step is checked against the trace: reward, life loss (``done``), game
    end, object positions and, when stored, the policy input must match, else the env did not
    reproduce the run. Dict observations: the frame is the image key the map is on (what the video
    shows), taken from the replay's observations, not the env's render; every other image key the
    trace has maps of (``key_cam_<key>``) gets its frames the same way, ``{key: (T, H', W', 3)}``.
    """
    from rlcam.envs import frames, make_env
    from rlcam.objects import positions
    from rlcam.record import observation_frames
    from rlcam.zoo import trace_env

    env_id = meta["env_id"]
    env = trace_env(meta, f"trace {source}")  # an rl-zoo run's: its wrappers, stack and statistics
    stack = None if meta.get("zoo_run") else meta.get("frame_stack") or None
    venv, _ = make_env(env, n_envs=1, seed=int(meta["seed"]) + env_index, frame_stack=stack)
    space = space_info(venv.action_space, venv.observation_space, str(meta.get("layer", "")))
    image_key = space.get("image_key")
    others = other_image_keys(space, arrays)
    out: list[np.ndarray] = []
    key_out: dict[str, list[np.ndarray]] = {k: [] for k in others}

    def recorded(key: str, t: int):
        return arrays[key][t] if key in arrays else None

    try:
        for key in others:  # images (C, H, W), as observation_frames reads them
            grid, maps = tuple(venv.observation_space[key].shape[-2:]), arrays[f"key_cam_{key}"].shape[1:]
            if maps != grid:
                raise RlcamError(
                    f"trace {source} has maps of key {key!r} on a {maps[0]}x{maps[1]} grid but the env's {key!r} "
                    f"images are {grid[0]}x{grid[1]}, so they are not this env's maps; record the run again."
                )
        obs = venv.reset()
        for t, action in enumerate(arrays["action"]):
            if isinstance(obs, dict):
                checks = {f"policy input {k!r}": (v[0], recorded(f"obs_{k}", t)) for k, v in obs.items()}
            else:
                checks = {"policy input": (obs[0], recorded("obs", t))}
            for name, centre in positions(venv, env_id).items():  # where things were when the agent acted
                checks[f"{name} position"] = (centre[0], recorded(f"obj_{name}", t))
            out.append(frames(venv)[0] if image_key is None else observation_frames(obs[image_key])[0])
            for key in others:
                key_out[key].append(observation_frames(obs[key])[0])
            obs, rewards, dones, infos = venv.step(np.asarray(action)[None])
            checks["reward"] = (rewards[0], recorded("reward", t))
            checks["life loss"] = (dones[0], recorded("done", t))
            checks["game end"] = ("episode" in infos[0], recorded("game_over", t))
            for what, (replayed, stored) in checks.items():
                same = stored is None or (
                    np.shape(replayed) == np.shape(stored) and np.allclose(replayed, stored, equal_nan=True)
                )
                if not same:
                    raise RlcamError(
                        f"replaying trace {source} in {env_id} did not reproduce the recorded run (the {what} "
                        f"differs at step {t}): the env is not reproducible from its seed, so the page's frames "
                        "cannot be rebuilt."
                    )
    finally:
        venv.close()
    return np.stack(out), {k: np.stack(v) for k, v in key_out.items()}, space


# -- what the page plots -------------------------------------------------------------------------------


def bar_kind(meta: dict, arrays: dict[str, np.ndarray] | None = None) -> str:
    """What the panel's bars show: ``prob`` or ``q`` (one index per step), ``component`` (continuous
    actions: float vectors) or ``parts`` (structured actions: integer vectors)."""
    action = None if arrays is None else arrays.get("action")
    if action is not None and action.ndim == 2:
        return "component" if np.issubdtype(action.dtype, np.floating) else "parts"
    family = str(meta.get("family", ""))
    if family:  # the family's own words (rlcam.families): actor-critics show probabilities
        return "q" if family == "Q-network" else "prob"
    return meta.get("bar_kind") or BAR_KIND.get(str(meta.get("algo", "")).lower(), "q")


def value_label(meta: dict, kind: str) -> str:
    """What the run's ``value`` is: an actor + critics family shows the critic's Q of the taken action."""
    if meta.get("family") == "actor + critics":
        return "Q(s, a)"
    return "max Q" if kind == "q" else "value V(s)"


def part_sizes(run: ReportRun) -> list[int]:
    """Each part's number of choices (structured actions): the env's, else the bars' split evenly."""
    if "sizes" in run.space:
        return list(run.space["sizes"])
    parts = run.arrays["action"].shape[1]
    return [run.arrays["action_values"].shape[1] // parts] * parts


def component_names(run: ReportRun) -> list[str]:
    """One name per action component (or part): the trace's action names where they fit, else ``a<i>``."""
    n = run.arrays["action"].shape[1]
    names = [str(x) for x in run.meta.get("action_names", [])]
    return names if len(names) == n else [f"a{i}" for i in range(n)]


def tile_labels(run: ReportRun) -> list[str]:
    """The caption of each ``action_cams`` tile: an action, a component, a part or a critic."""
    n = run.arrays["action_cams"].shape[1]
    kind = bar_kind(run.meta, run.arrays)
    target = str(run.meta.get("target", ""))
    if kind == "component" and (target == "q" or target.startswith("q:")):
        return [f"critic {k}" for k in range(n)]
    if kind in ("component", "parts"):
        names = component_names(run)
        return names if len(names) == n else [f"tile {k}" for k in range(n)]
    names = [str(x) for x in run.meta["action_names"]]
    return names if len(names) == n else [str(k) for k in range(n)]


def series(run: ReportRun) -> dict[str, np.ndarray]:
    """Per-step ``(T,)`` float series for the timeline (NaN where undefined)."""
    a = run.arrays
    T = run.steps
    out: dict[str, np.ndarray] = {"value": a["value"].astype(np.float64), "reward": a["reward"].astype(np.float64)}
    game_over = a["game_over"].astype(bool)
    ret, total = np.zeros(T), 0.0
    for t in range(T):
        total += float(a["reward"][t])
        ret[t] = total
        if game_over[t]:
            total = 0.0
    out["return"] = ret
    out["episode"] = np.concatenate([[0], np.cumsum(game_over)[:-1]]).astype(np.float64)
    out["peak"] = a["cam"].reshape(T, -1).max(axis=1).astype(np.float64)
    if "cam_down" in a:  # signed targets: the strongest "pushes it down" evidence
        out["peak_down"] = a["cam_down"].reshape(T, -1).max(axis=1).astype(np.float64)
    kind = bar_kind(run.meta, a)
    if kind == "component":
        for i, values in enumerate(a["action"].astype(np.float64).T):
            out[f"component_{i}"] = values  # the action taken, in env units
    elif kind == "parts" and "action_values" in a:
        out.update(part_series(run))
    elif "action_values" in a:
        values = a["action_values"].astype(np.float64).reshape(T, -1)
        out["chosen"] = values[np.arange(T), a["action"]]
        top = np.sort(values, axis=1)[:, ::-1]
        out["margin"] = top[:, 0] - top[:, 1] if values.shape[1] > 1 else np.full(T, np.nan)
        if kind == "prob":
            out["entropy"] = entropy(values)
    for key in ("memory_effect", "pixel_effect"):  # recurrent: how far the score moves without memory / pixels
        if key in a:
            out[key] = a[key].astype(np.float64)
    if "input_shares" in a:  # Dict observations: each key's share of the explained score
        names = run.space.get("input_names") or [f"key {k}" for k in range(a["input_shares"].shape[1])]
        for name, share in zip(names, a["input_shares"].astype(np.float64).T, strict=False):
            out[f"input_{name}"] = share
    out.update(object_shares(run))
    return out


def entropy(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of probabilities ``(T, B)``."""
    p = np.clip(p, 0.0, 1.0)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)


def part_series(run: ReportRun) -> dict[str, np.ndarray]:
    """Structured actions: the joint probability of the taken parts (``chosen``), the joint entropy
    (the parts are independent: their entropies add) and the smallest gap between a part's two most
    likely choices (``margin``: the most uncertain part), plus which part that was."""
    a, T = run.arrays, run.steps
    values = a["action_values"].astype(np.float64)
    chosen, total, margins = np.ones(T), np.zeros(T), []
    start = 0
    for p, size in enumerate(part_sizes(run)):
        probs = values[:, start : start + size]
        chosen *= probs[np.arange(T), a["action"][:, p]]
        total += entropy(probs)
        top = np.sort(probs, axis=1)[:, ::-1]
        margins.append(top[:, 0] - top[:, 1] if size > 1 else np.full(T, np.inf))
        start += size
    margins = np.stack(margins, axis=1)
    return {"chosen": chosen, "entropy": total, "margin": margins.min(axis=1), "margin_part": margins.argmin(axis=1)}


def object_shares(run: ReportRun) -> dict[str, np.ndarray]:
    """``share_<name>``: each step's share of map mass within ``OBJECT_RADIUS`` px of each known object."""
    from rlcam.objects import share_near

    keys = sorted(k for k in run.arrays if k.startswith("obj_"))
    if not keys:
        return {}
    ys, xs = placement(run.meta).frame_matrices(*run.frames.shape[1:3])
    out = {f"share_{k[4:]}": np.full(run.steps, np.nan) for k in keys}
    for t in range(run.steps):
        heat = ys @ run.arrays["cam"][t].astype(np.float32) @ xs.T
        for k in keys:
            out[f"share_{k[4:]}"][t] = share_near(heat, run.arrays[k][t], OBJECT_RADIUS)
    return out


def placement(meta: dict) -> Placement:
    entry = meta[PLACEMENT_META]
    return Placement(meta.get("placement", "bilinear"), np.asarray(entry["y"]), np.asarray(entry["x"]))


def _top_steps(score: np.ndarray, count: int, spacing: int = 8) -> list[int]:
    """Indices of the ``count`` largest finite scores, at least ``spacing`` steps apart (the first of a burst wins)."""
    order = [int(i) for i in np.argsort(-score, kind="stable") if np.isfinite(score[i])]
    picked: list[int] = []
    for i in order:
        if all(abs(i - j) >= spacing for j in picked):
            picked.append(i)
        if len(picked) == count:
            break
    return picked


def moments(run: ReportRun, s: dict[str, np.ndarray]) -> list[dict]:
    """The "moments worth a look": lists of ``{step, text}``, each list with its title and what it ranks."""
    a, T = run.arrays, run.steps
    found = []
    drop = np.full(T, np.nan)
    if T > 1:
        # The value's fall from step t to t+1, except across a new game (its start is no drop).
        drop[:-1] = np.where(a["game_over"][:-1], np.nan, s["value"][:-1] - s["value"][1:])
        drop[drop <= 0] = np.nan
    items = [
        {"step": t, "text": f"value {s['value'][t]:.3g} \u2192 {s['value'][t + 1]:.3g}", "score": float(drop[t])}
        for t in _top_steps(drop, MOMENTS_PER_KIND)
    ]
    found.append({"title": "Largest value drops", "kind": "drop", "items": sorted(items, key=lambda m: m["step"])})
    done, over = a["done"].astype(bool), a["game_over"].astype(bool)
    losses = [
        {"step": int(t), "text": "game over" if over[t] else f"life lost, return {s['return'][t]:.0f}"}
        for t in np.flatnonzero(done | over)
    ]
    found.append({"title": "Life losses and game ends", "kind": "life", "items": losses[:40]})
    if "margin" in s and np.isfinite(s["margin"]).any():
        kind = bar_kind(run.meta, a)
        unit = "probability" if kind in ("prob", "parts") else "Q"
        names = run.meta["action_names"]
        values = a["action_values"].reshape(T, -1)
        items = []
        for t in _top_steps(-s["margin"], MOMENTS_PER_KIND):
            if kind == "parts":  # the most uncertain part's two best choices
                p = int(s["margin_part"][t])
                start = sum(part_sizes(run)[:p])
                first, second = np.argsort(-values[t, start : start + part_sizes(run)[p]], kind="stable")[:2]
                what = f"{component_names(run)[p]}: {first} vs {second}"
            else:
                first, second = np.argsort(-values[t], kind="stable")[:2]
                what = f"{names[first]} vs {names[second]}"
            items.append({"step": t, "text": f"{what}: {unit} gap {s['margin'][t]:.3g}"})
        found.append(
            {"title": "Most uncertain decisions", "kind": "uncertain", "items": sorted(items, key=lambda m: m["step"])}
        )
    jump = np.full(T, np.nan)
    jump[1:] = np.abs(np.diff(s["peak"]))
    items = [
        {"step": t, "text": f"map peak {s['peak'][t - 1]:.3g} \u2192 {s['peak'][t]:.3g}"}
        for t in _top_steps(jump, MOMENTS_PER_KIND)
    ]
    found.append({"title": "Map peak jumps", "kind": "peak", "items": sorted(items, key=lambda m: m["step"])})
    for group in found:
        for item in group["items"]:
            item.pop("score", None)
    return found


# -- the payload -------------------------------------------------------------------------------------------


def binary(array: np.ndarray, dtype: str) -> dict:
    """A binary array for the page: little-endian bytes in base64, with its dtype and shape."""
    arr = np.ascontiguousarray(array, dtype={"f4": "<f4", "i4": "<i4", "u1": "u1"}[dtype])
    return {"dtype": dtype, "shape": list(arr.shape), "b64": base64.b64encode(arr.tobytes()).decode("ascii")}


def sparse_rows(matrix: np.ndarray) -> dict:
    """A placement matrix ``(R, C)`` as its non-zero entries row by row (what the page's
    ``sparseRows`` makes of a dense one): an input-grid map's matrices are ~95% zeros."""
    rows, cols = np.nonzero(matrix)  # row-major: the rows come sorted
    start = np.searchsorted(rows, np.arange(matrix.shape[0] + 1))
    return {
        "shape": list(matrix.shape),
        "start": binary(start, "i4"),
        "idx": binary(cols, "i4"),
        "w": binary(matrix[rows, cols], "f4"),
    }


def encode_frames(frames: np.ndarray, chunk: int = FRAME_CHUNK) -> dict:
    """``(T, H, W, 3)`` uint8 -> palette (or RGB) planes, XOR-delta coded per chunk of steps and deflated."""
    T, H, W, _ = frames.shape
    packed = (frames[..., 0].astype(np.uint32) << 16) | (frames[..., 1].astype(np.uint32) << 8) | frames[..., 2]
    colours = np.unique(packed[:, ::4, ::4])  # most colours; the exact check below adds what the sample missed
    while True:
        index = np.minimum(np.searchsorted(colours, packed), len(colours) - 1)
        missing = colours[index] != packed
        if not missing.any() or len(colours) > 256:
            break
        colours = np.union1d(colours, np.unique(packed[missing]))
    if len(colours) <= 256:
        planes, palette, channels = index.astype(np.uint8), colours, 1
    else:
        planes, palette, channels = np.ascontiguousarray(frames), None, 3
    chunks = []
    for start in range(0, T, chunk):
        block = planes[start : start + chunk]
        delta = block.copy()
        delta[1:] ^= block[:-1]  # consecutive game frames differ in a few hundred pixels
        chunks.append(base64.b64encode(zlib.compress(delta.tobytes(), 9)).decode("ascii"))
    spec = {"steps": T, "height": H, "width": W, "channels": channels, "chunk": chunk, "chunks": chunks}
    if palette is not None:
        rgb = np.stack([(palette >> 16) & 255, (palette >> 8) & 255, palette & 255], axis=1)
        spec["palette"] = binary(rgb.astype(np.uint8), "u1")
    return spec


def display_scale(meta: dict, frame_hw: tuple[int, int]) -> int:
    """The video's integer upscaling (the recorder's ``--scale``, else its automatic one: ~630 px tall)."""
    return int(meta.get("scale") or max(1, 630 // frame_hw[0]))


def _clean(x: Any) -> Any:
    """JSON without NaN/inf (not valid JSON): they become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


def run_payload(run: ReportRun, frames_ref: int, scale: int, key_refs: dict[str, int] | None = None) -> dict:
    """What the page gets for one run: maps, placement at display size, series, moments, notes.

    ``frames_ref`` is the index of the run's frames in the page's ``frames``; ``key_refs``, where
    given, the same for each other image key's frames, which are otherwise sent in the run's own
    ``key_maps``."""
    H, W = run.frames.shape[1:3]
    a = run.arrays
    s = series(run)
    ys, xs = placement(run.meta).frame_matrices(H * scale, W * scale)
    tile_ys, tile_xs = placement(run.meta).frame_matrices(H, W)
    meta = {k: v for k, v in run.meta.items() if k != PLACEMENT_META}
    kind = bar_kind(run.meta, a)
    payload = {
        "label": run.label,
        "meta": meta,
        "frames": frames_ref,
        "bar_kind": kind,
        "value_label": value_label(run.meta, kind),
        "action_names": [str(n) for n in run.meta["action_names"]],
        "space": dict(run.space),
        "cam": binary(a["cam"], "f4"),
        "placement": {
            "ys": binary(ys, "f4"),
            "xs": binary(xs, "f4"),
            "tile_ys": binary(tile_ys, "f4"),
            "tile_xs": binary(tile_xs, "f4"),
        },
        "action": binary(a["action"], "f4" if kind == "component" else "i4"),
        "done": binary(a["done"].astype(np.uint8), "u1"),
        "game_over": binary(a["game_over"].astype(np.uint8), "u1"),
        "series": {k: binary(v, "f4") for k, v in s.items()},
        "moments": moments(run, s),
        "notes": list(run.notes),
    }
    for key in ("action_values", "action_cams", "cam_down", "frame_shares", "score"):
        if key in a:
            payload[key] = binary(a[key], "f4")
    if "action_cams" in a:
        payload["tile_labels"] = tile_labels(run)
    if kind == "parts":
        payload["space"]["sizes"] = part_sizes(run)
    if a["action"].ndim == 2:
        payload["component_names"] = component_names(run)
    payload["objects"] = {k[4:]: binary(a[k], "f4") for k in sorted(a) if k.startswith("obj_")}
    payload["object_radius"] = OBJECT_RADIUS
    if run.key_frames:
        payload["key_maps"] = key_maps(run, scale, key_refs)
    names = run.space.get("input_names", [])
    if any(f"attr_{k}" in a for k in names):  # Dict observations' vector keys, in the space's order
        payload["attributions"] = [
            {"key": k, "values": binary(a[f"attr_{k}"], "f4")} for k in names if f"attr_{k}" in a
        ]
    return payload


def key_maps(run: ReportRun, scale: int, refs: dict[str, int] | None = None) -> list[dict]:
    """Dict observations' other image keys, each a pane beside the main frame: its frames (or, with
    ``refs``, their index in the page's ``frames``), its maps ``(T, H, W)`` on its own input grid
    (``key_cam_<key>``) and the matrices stretching them onto its frame at display size (the
    video's: ``stretch_matrix``, bilinear)."""
    out = []
    for key, images in run.key_frames.items():
        H, W = images.shape[1:3]
        cams = run.arrays[f"key_cam_{key}"]
        out.append(
            {
                "key": key,
                "frames": encode_frames(images) if refs is None else refs[key],
                "cam": binary(cams, "f4"),
                "ys": sparse_rows(stretch_matrix(H * scale, cams.shape[1])),
                "xs": sparse_rows(stretch_matrix(W * scale, cams.shape[2])),
            }
        )
    return out


def page_html(payload: dict) -> str:
    """The page: template + CSS + JS + the payload, in one file."""
    template = (ASSETS / "report.html").read_text()
    data = json.dumps(_clean(payload), separators=(",", ":"), allow_nan=False)
    data = data.replace("<", "\\u003c")  # no "</script>" can end the data block early
    title = html.escape(str(payload.get("title", "rlcam report")))
    return (
        template.replace("{{TITLE}}", title)
        .replace("/*{{CSS}}*/", (ASSETS / "report.css").read_text())
        .replace("/*{{JS}}*/", (ASSETS / "report.js").read_text())
        .replace("{{DATA}}", data)
    )


def payload_for(runs: list[ReportRun], title: str, shared_frames: bool = False, compare: dict | None = None) -> dict:
    """The page's data for one run, or for two (``compare``).

    ``shared_frames``: the runs saw the same observations (``rlcam compare`` in replay mode), so each
    picture (the env's frame, or one image key of a Dict observation) is sent once in ``frames``
    and every run that shows it, as its frame or beside it, points at it.
    """
    frame_specs: list[dict] = []
    sent: dict[str | None, int] = {}  # shared_frames: image key (None: the env's frame) -> its index

    def ref(key: str | None, frames: np.ndarray) -> int:
        if not shared_frames or key not in sent:
            frame_specs.append(encode_frames(frames))
            sent[key] = len(frame_specs) - 1
        return sent[key]

    scale = display_scale(runs[0].meta, runs[0].frames.shape[1:3])
    run_payloads = []
    for run in runs:
        main = ref(run.space.get("image_key"), run.frames)
        key_refs = {k: ref(k, f) for k, f in run.key_frames.items()} if shared_frames else None
        run_payloads.append(run_payload(run, main, scale, key_refs))
    return {
        "version": 1,
        "title": title,
        "steps": runs[0].steps,
        "scale": scale,
        "fps": int(runs[0].meta.get("fps", 30)),
        "norm": runs[0].meta.get("normalisation", "running"),
        "running_decay": RUNNING_DECAY,
        "lut": binary(LUT, "u1"),
        "lut_down": binary(LUT_DOWN, "u1"),
        "frames": frame_specs,
        "runs": run_payloads,
        "compare": compare,
    }


# -- writing -------------------------------------------------------------------------------------------


@dataclass
class ReportResult:
    path: Path
    steps: int
    bytes: int


def video_frame_count(video: Path) -> int:
    import imageio_ffmpeg

    try:
        return int(imageio_ffmpeg.count_frames_and_secs(str(video))[0])
    except Exception as exc:  # ffmpeg could not read it
        raise RlcamError(f"cannot read the video {video} ({exc}); give the video recorded with the trace.") from None


def check_video(video: Path, steps: int) -> None:
    """The video the page links to must be this run's: one frame per step (GIFs merge repeats: not counted)."""
    if not video.is_file():
        raise RlcamError(f"video {video} does not exist; give the video recorded with the trace, or leave --video out.")
    if video.suffix.lower() == ".gif":
        return
    count = video_frame_count(video)
    if count != steps:
        raise RlcamError(
            f"video {video} has {count} frames but the trace has {steps} steps, so they are not one recording."
        )


def write_atomic(out: Path, text: str) -> int:
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out.stat().st_size


def write_report(
    trace: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    video: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    env_index: int = 0,
) -> ReportResult:
    """Write the HTML report of a trace (default: beside it, same stem, ``.html``).

    Args:
        trace: the ``.npz`` written by ``rlcam record``.
        out: the page's path.
        video: the run's video, linked from the page and checked to have one frame per step;
            default: the trace's sibling ``.mp4`` if there is one.
        overwrite: replace an existing page.
        env_index: which env of a several-env trace to show.
    """
    trace = Path(trace)
    out = Path(out) if out is not None else trace.with_suffix(".html")
    check_output(out, overwrite)
    run = run_from_trace(trace, env_index=env_index)
    if video is None and trace.with_suffix(".mp4").is_file():
        video = trace.with_suffix(".mp4")
    if video is not None:
        video = Path(video)
        check_video(video, run.steps)
        run.meta["video_link"] = os.path.relpath(video.resolve(), out.resolve().parent)
    meta = run.meta
    title = f"{run.label} on {meta['env_id']}: {run.steps} steps"
    size = write_atomic(out, page_html(payload_for([run], title)))
    return ReportResult(out, run.steps, size)
