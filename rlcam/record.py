"""The per-step loop: observe -> explain -> act -> render -> write.

``record(RecordConfig(...))`` is what ``rlcam record`` runs. Outputs appear only when
complete (written under temporary names, renamed at the end); Ctrl-C or SIGTERM stop
the loop at a step boundary and still close a valid, shorter video and trace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

import rlcam
from rlcam import coverage
from rlcam.agents import load_agent
from rlcam.device import device_meta, resolve_device
from rlcam.envs import action_names, check_compatible, frames, make_env
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer
from rlcam.geometry import stretch_matrix
from rlcam.norm import Normalizer
from rlcam.objects import object_names, positions
from rlcam.render import PanelInfo, compose, grid_tile_size, view_width
from rlcam.video import PLACEMENT_META, BackgroundFrames, FrameWriter, TraceWriter, placement_meta
from rlcam.zoo import agent_and_env, trace_fields

DEFAULT_STEPS = 1000


@dataclass
class RecordConfig:
    """What to record. Paths may be str or Path."""

    agent: Path
    """SB3 agent zip (PPO, A2C, DQN, QR-DQN), or an rl-zoo run folder (see ``rlcam.zoo``)."""
    env: str | None = None
    """Env name: a short Atari name, a Gymnasium id, or ``module:EnvId-v0``; default: a run folder's own env,
    else ``Breakout``."""
    frame_stack: int | None = None
    """Frames stacked per observation; default: the run's, for Atari the agent's own depth, else none."""
    out: Path = Path("rlcam.mp4")
    """Video path; ``.mp4`` or ``.gif``."""
    trace: Path | None = None
    """Trace path (``.npz``); default: beside the video, same stem."""
    steps: int | None = None
    """Agent steps to record (default 1000 when ``episodes`` is not given)."""
    episodes: int | None = None
    """Record until this many full games (game over, not life loss) have ended."""
    max_steps: int | None = None
    """With ``episodes``: stop after this many steps even if the games have not all ended."""
    seed: int = 0
    """Seeds the envs (env i gets seed + i) and the sampling of stochastic actions."""
    deterministic: bool = True
    """Argmax actions; False samples them (seeded)."""
    target: str | None = None
    """Explained score: logit/logprob/value (PPO, A2C), q/advantage (DQN, QR-DQN)."""
    layer: str | None = None
    """Module path inside ``model.policy``; default: the last rectified conv output."""
    method: str = "gradcam"
    placement: str = "bilinear"
    norm: str = "running"
    n_envs: int = 1
    """Envs stepped together; all are explained in one batch, the video shows env 0."""
    save_obs: bool = False
    """Store the exact policy input in the trace."""
    all_actions: bool = False
    """Also explain every action: a grid of per-action maps under the video, ``action_cams`` in the trace."""
    fps: int = 30
    scale: int | None = None  # None: as large as fits a ~630 px tall view (3 for Atari's 210 px frames)
    """Integer upscaling of the game frame in the video."""
    alpha: float = 0.6
    """Opacity of the map at full attention."""
    overwrite: bool = False
    video: bool = True
    """Write the video; False writes the trace alone (``out`` then only names the default trace)."""
    algo: str | None = None
    """Force the algorithm instead of detecting it from the zip."""
    trust: bool = False
    """Allow SB3's full load, which unpickles the zip (runs code in it); only for files you trust."""
    custom_objects: dict[str, str] | None = None
    """Classes of your own code for pickled ones, ``{key: "module:Class"}`` (see ``rlcam.agents.load_agent``)."""
    device: str = "cpu"
    """Where the maps are computed: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``rlcam.device``)."""

    def __post_init__(self):
        self.agent = Path(self.agent)
        self.out = Path(self.out)
        self.trace = Path(self.trace) if self.trace is not None else self.out.with_suffix(".npz")


@dataclass
class RecordResult:
    video: Path | None  # None when the config asked for no video
    trace: Path
    steps: int
    episodes: int  # games that ended during the recording
    interrupted: bool
    seconds: float
    meta: dict = field(repr=False)
    warnings: list[str] = field(default_factory=list)  # sentences worth a reader's attention (also in meta)


def validate(cfg: RecordConfig) -> None:
    """Reject bad settings before anything is loaded or written."""
    if cfg.steps is not None and cfg.episodes is not None:
        raise RlcamError("give either --steps or --episodes, not both.")
    if cfg.steps is not None and cfg.steps <= 0:
        raise RlcamError(f"--steps must be a positive number of steps, not {cfg.steps}.")
    if cfg.episodes is not None and cfg.episodes <= 0:
        raise RlcamError(f"--episodes must be a positive number of games, not {cfg.episodes}.")
    if cfg.max_steps is not None and cfg.max_steps <= 0:
        raise RlcamError(f"the step cap must be a positive number of steps, not {cfg.max_steps}.")
    for name, value, low in (("--n-envs", cfg.n_envs, 1), ("--fps", cfg.fps, 1), ("--scale", cfg.scale or 1, 1)):
        if value < low:
            raise RlcamError(f"{name} must be at least {low}, not {value}.")
    if not 0.0 <= cfg.alpha <= 1.0:
        raise RlcamError(f"--alpha must lie in [0, 1], not {cfg.alpha}.")
    if cfg.video and cfg.out.suffix.lower() not in (".mp4", ".gif"):
        raise RlcamError(f"--out must end in .mp4 or .gif, not {cfg.out.name!r}.")
    if cfg.trace.suffix.lower() != ".npz":
        raise RlcamError(f"--trace must end in .npz, not {cfg.trace.name!r}.")
    if cfg.video and cfg.out.resolve() == cfg.trace.resolve():
        raise RlcamError("--out and --trace name the same file.")
    for path in (cfg.out, cfg.trace) if cfg.video else (cfg.trace,):
        if path.is_dir():
            raise RlcamError(f"output {path} is a directory; give a file name.")
        if path.exists() and not cfg.overwrite:
            raise RlcamError(f"output {path} already exists; pass --overwrite to replace it.")
        if not path.parent.exists():
            raise RlcamError(f"output directory {path.parent} does not exist; create it first.")


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop stops at the next step boundary."""

    requested = False


@contextlib.contextmanager
def _stop_on_signals():
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        if flag.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        flag.requested = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def record(cfg: RecordConfig, on_step: Callable[[int, int | None], None] | None = None) -> RecordResult:
    """Run the agent, explain every step, stream the annotated video and the trace.

    Args:
        cfg: what to record.
        on_step: called after each step with (steps done, total steps or None) for progress display.
    """
    validate(cfg)
    device = resolve_device(cfg.device)
    started = time.perf_counter()
    agent_path, env = agent_and_env(cfg.agent, cfg.env)  # a run folder: its model and its training env
    agent = load_agent(agent_path, algo=cfg.algo, trust=cfg.trust, custom_objects=cfg.custom_objects, device=device)
    space = agent.model.observation_space
    venv, env_info = make_env(env, cfg.n_envs, cfg.seed, frame_stack=cfg.frame_stack, agent_space=space)
    try:
        check_compatible(venv, agent.model.observation_space, agent.model.action_space, env_info.env_id)
        names = action_names(venv)
        explainer = Explainer(
            agent,
            target=cfg.target,
            layer=cfg.layer,
            method=cfg.method,
            placement=cfg.placement,
            deterministic=cfg.deterministic,
            seed=cfg.seed,
            action_names=names,
            extras=True,  # the trace keeps Dict shares, memory vs pixels, Q(s, a) beside an actor's map
        )
        if cfg.all_actions:  # before any output is opened
            explainer.check_tiles()
        total = cfg.steps if cfg.steps is not None else (None if cfg.episodes else DEFAULT_STEPS)
        blind = unseen_inputs(explainer)
        meta = dict(
            rlcam_version=rlcam.__version__,
            env=str(env),
            frame_stack=env_info.frame_stack,
            **trace_fields(env_info.source),
            env_id=env_info.env_id,
            atari_wrappers=env_info.atari,
            algo=agent.algo,
            family=explainer.family.name,
            agent=str(cfg.agent),
            agent_sha256=agent.sha256,
            target=explainer.target,
            layer=explainer.layer_name,
            method=cfg.method,
            placement=cfg.placement,
            normalisation=cfg.norm,
            seed=cfg.seed,
            deterministic=cfg.deterministic,
            epsilon=explainer.epsilon,
            n_envs=cfg.n_envs,
            steps_requested=total,
            episodes_requested=cfg.episodes,
            action_names=names,
            video=str(cfg.out) if cfg.video else None,
            fps=cfg.fps,
            scale=cfg.scale,
            save_obs=cfg.save_obs,
            all_actions=cfg.all_actions,
            objects=object_names(env_info.env_id),
            unseen_input=[dataclasses.asdict(u) for u in blind],
            **device_meta(device),
        )
        with (
            explainer,
            _stop_on_signals() as stop,
            BackgroundFrames(FrameWriter(cfg.out, fps=cfg.fps)) if cfg.video else contextlib.nullcontext() as video,
            TraceWriter(cfg.trace, meta) as trace,
        ):
            steps, games, interrupted, env_failure, zero_share = _loop(
                cfg, venv, env_info.env_id, explainer, names, video, trace, total, stop, on_step
            )
            warning = zero_maps_warning(zero_share, explainer)
            run_meta = dict(
                steps=steps,
                episodes_ended=games,
                interrupted=interrupted,
                env_failure=env_failure,
                zero_map_share=zero_share,
                warnings=coverage.sentences(blind) + ([warning] if warning else []),
            )
            trace.close(extra_meta=run_meta)
            meta.update(run_meta)
    finally:
        venv.close()
    if env_failure is not None:
        kept = f"the video and trace hold the {steps} steps before it" if steps else "nothing was written"
        raise RlcamError(f"{env_failure}; {kept}.")
    return RecordResult(
        video=cfg.out if cfg.video else None,
        trace=cfg.trace,
        steps=steps,
        episodes=games,
        interrupted=interrupted,
        seconds=time.perf_counter() - started,
        meta=meta,
        warnings=meta["warnings"],
    )


def _element_labels(explained) -> tuple[str, ...] | None:
    """``key[i]`` for every vector element the panel's strip shows, in its order."""
    if not explained.input_attributions:
        return None
    return tuple(f"{key}[{j}]" for key, a in explained.input_attributions.items() for j in range(a.shape[-1]))


def unseen_inputs(explainer) -> list:
    """``rlcam.coverage.Unseen`` for each mapped image (the layer's, and a Dict's other image keys) with
    pixels the network never reads."""
    from rlcam.explainer import key_layers

    layers = [explainer.layer_name]
    if explainer.image_key is not None:
        others = key_layers(explainer.agent, explainer.target)
        layers += [layer for key, layer in others.items() if key != explainer.image_key]
    return coverage.unseen_in(explainer.policy, layers)


def zero_maps_warning(zero_share: float | None, explainer) -> str | None:
    """One sentence when the map was all zero on most steps: nothing to see is a finding, not a video to trust."""
    if zero_share is None or zero_share <= 0.5:
        return None
    return (
        f"the {explainer.method} map of {explainer.target!r} at {explainer.layer_name} was all zero on "
        f"{100 * zero_share:.0f}% of steps: no positive evidence there for that score; try another --target, "
        "--layer, or --method counterfactual for what speaks against it."
    )


class StepWriter:
    """Renders and writes one explained step at a time: the video frame of one env and the trace row.

    Shared by ``record`` and the wrappers, so every path draws and stores steps the same way.

    Args:
        explainer: the open explainer whose explanations are written.
        action_names: one name per action, for the panel.
        video: where frames go (a ``FrameWriter``, ``BackgroundFrames``, or anything with
            ``append(frame)``), or None for a trace only.
        trace: where the rows go (a ``TraceWriter``: ``append(**row)`` and ``set_meta(**fields)``),
            or None for a video only. Rows hold ``cam`` but not ``cam_input``: the placement goes
            to meta, and ``load_trace`` rebuilds ``cam_input`` from the two.
        n_envs: envs per step; the trace gets an env axis when > 1.
        norm, scale, alpha: display settings (see ``RecordConfig``).
        save_obs: also store the policy inputs in the trace.
        video_env: which env the video shows.
        all_actions: also show every action's map (``Explanation.action_cams``, from
            ``explain(obs, all_actions=True)``, else computed here with ``Explainer.action_maps``):
            a grid under the video, one tile per action on a shared scale (its own running
            normaliser), and ``action_cams (N, A, h, w)`` in the trace.
    """

    def __init__(
        self,
        explainer,
        action_names,
        video=None,
        trace=None,
        n_envs=1,
        norm="running",
        scale=3,
        alpha=0.6,
        save_obs=False,
        video_env=0,
        all_actions=False,
    ):
        self.explainer = explainer
        self.action_names = action_names
        self.video = video
        self.trace = trace
        self.n_envs = n_envs
        self.norm = Normalizer(norm, n_envs)
        self.scale = scale
        self.alpha = alpha
        self.save_obs = save_obs
        self.video_env = video_env
        self.returns = np.zeros(n_envs, dtype=np.float64)
        self.episode = np.zeros(n_envs, dtype=np.int64)
        self.steps = 0
        self.games = 0
        # (height, width) -> the (height, h) and (width, w) matrices taking a layer map onto a picture of
        # that size: the upscaled video frame, and the grid's tiles.
        self._to_size: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._key_to_size: dict[tuple[str, tuple[int, int]], list[torch.Tensor]] = {}  # other image keys' maps
        self.all_actions = all_actions
        self.action_norm = Normalizer(norm, n_envs)  # one scale over all actions' maps
        self.maps = self.zero_maps = 0  # maps written, and those all zero (nothing positive to show)

    def zero_share(self) -> float | None:
        """The share of written maps that were all zero (None before any)."""
        return self.zero_maps / self.maps if self.maps else None

    def heat(self, cam: np.ndarray, frame_hw: tuple[int, int], scale: float) -> np.ndarray:
        """Colormap indices ``(H*s, W*s)`` uint8 for a layer map ``cam (h, w)``, straight from the layer grid."""
        return self._placed(cam, (frame_hw[0] * self.scale, frame_hw[1] * self.scale), scale)

    def tile_heats(
        self, cams: np.ndarray, frame_hw: tuple[int, int], scale: float, span: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Colormap indices ``(A, tile_h, tile_w)`` for the grid, from maps ``cams (A, h, w)``; with
        ``span = (x0, w)``, the maps cover only those frame columns (the mapped image key's)."""
        _, _, tile_h, tile_w = grid_tile_size(frame_hw, view_width(frame_hw, self.scale), len(cams))
        if span is None or span[1] >= frame_hw[1]:
            return self._placed(cams, (tile_h, tile_w), scale)
        x0, x1 = (round(tile_w * x / frame_hw[1]) for x in (span[0], span[0] + span[1]))
        heats = np.zeros((len(cams), tile_h, tile_w), np.uint8)
        heats[:, :, x0:x1] = self._placed(cams, (tile_h, max(1, x1 - x0)), scale)
        return heats

    def beside(self, frame, heat, obs, key_cams: dict[str, np.ndarray], i: int, scale: float):
        """Every image key of a Dict observation side by side, in the space's order (as the panel's
        shares), each with its map on the same scale, 2 px apart; keys of another height are left
        to the trace. Returns the frame, its heat and the mapped key's columns ``(x0, w)``."""
        mapped = self.explainer.image_key
        frames, heats, span, x = [], [], (0, frame.shape[1]), 0
        for key in (k for k in obs if k == mapped or k in key_cams):
            if key == mapped:
                image, placed, span = frame, heat, (x, frame.shape[1])
            else:
                image = observation_frames(obs[key][i : i + 1])[0]
                if image.shape[0] != frame.shape[0]:
                    continue
                size = (image.shape[0] * self.scale, image.shape[1] * self.scale)
                if (key, size) not in self._key_to_size:
                    self._key_to_size[(key, size)] = [
                        torch.from_numpy(stretch_matrix(n, m).astype(np.float32))
                        for n, m in zip(size, key_cams[key].shape[1:], strict=True)
                    ]
                placed = _placed_indices(key_cams[key][i], scale, *self._key_to_size[(key, size)])
            if frames:
                frames.append(np.full((frame.shape[0], 2, 3), 255, np.uint8))
                heats.append(np.zeros((heat.shape[0], 2 * self.scale), np.uint8))
                x += 2
            frames.append(image)
            heats.append(placed)
            span = (x, image.shape[1]) if key == mapped else span
            x += image.shape[1]
        return np.concatenate(frames, axis=1), np.concatenate(heats, axis=1), span

    def _placed(self, cams: np.ndarray, size: tuple[int, int], scale: float) -> np.ndarray:
        """Maps ``(..., h, w)`` placed on a ``size`` picture as colormap indices; matrices kept per size."""
        if size not in self._to_size:
            self._to_size[size] = [torch.from_numpy(m) for m in self.explainer.placement.frame_matrices(*size)]
        return _placed_indices(cams, scale, *self._to_size[size])

    def write(self, obs, raw_frames, explained, rewards, dones, infos, objects=None) -> np.ndarray:
        """Write the step where ``explained`` was computed for ``obs`` and the env answered with the rest.

        Args:
            obs: ``(N, C, H, W)`` the policy inputs explained.
            raw_frames: N RGB frames ``(h, w, 3)`` shown when acting (only the video env's is used).
            explained: the explainer's output for ``obs``.
            rewards, dones, infos: what ``VecEnv.step`` returned for the explained actions.
            objects: ``{name: (N, 2)}`` object centres (y, x) in frame pixels when acting, NaN where
                not on screen (``rlcam.objects.positions``); stored as ``obj_<name>``.

        Returns:
            ``(N,)`` bool, the envs whose full game ended at this step.
        """
        flat = np.asarray(explained.cam).reshape(len(explained.cam), -1)
        self.maps += len(flat)
        self.zero_maps += int((np.nan_to_num(flat).max(axis=1) <= 0).sum())
        # Signed targets: both sides on one scale, so "up" and "down" compare at a glance.
        both = explained.cam if explained.cam_down is None else np.maximum(explained.cam, explained.cam_down)
        both = both.reshape(len(both), -1)
        if explained.key_cams:  # Dict observations' other image keys: one scale over every key's map
            both = np.concatenate([both, *(m.reshape(len(m), -1) for m in explained.key_cams.values())], axis=1)
        scales = self.norm.update(both)
        action_cams = None
        if self.all_actions:
            action_cams = explained.action_cams  # (N, A, h, w)
            if action_cams is None:  # explained without them: one more pass
                action_cams = self.explainer.action_maps(obs)
            action_scales = self.action_norm.update(action_cams.reshape(len(action_cams), -1, action_cams.shape[-1]))
        self.returns += rewards
        if self.video is not None:
            i = self.video_env
            panel = PanelInfo(
                step=self.steps,
                episode=int(self.episode[i]),
                **action_panel(self.explainer.family, self.action_names, explained, i),
                value=float(explained.value[i]),
                reward=float(rewards[i]),
                episode_return=float(self.returns[i]),
                target=self.explainer.family.describe(self.explainer.target),
                method=self.explainer.method,
                layer=self.explainer.layer_name,
                norm=self.norm.name,
                cam_scale=float(scales[i]),
                env_index=i,
                frame_shares=_shares(explained, i),
                share_names=tuple(self.explainer.policy.observation_space.spaces)
                if explained.input_shares is not None
                else None,
                elements=_elements(explained, i),
                element_names=tuple(explained.input_attributions) if explained.input_attributions else None,
                element_labels=_element_labels(explained),
            )
            frame = np.array(raw_frames[i])  # a copy: the frame may be drawn on another thread
            heat = self.heat(explained.cam[i], frame.shape[:2], scales[i])
            render = functools.partial(compose, scale=self.scale, alpha=self.alpha)
            down = None if explained.cam_down is None else self.heat(explained.cam_down[i], frame.shape[:2], scales[i])
            span = None
            if explained.key_cams:  # every image key side by side
                frame, heat, span = self.beside(frame, heat, obs, explained.key_cams, i, scales[i])
                if down is not None:  # the other keys' counterfactual maps are not computed: none drawn there
                    x0, w = span[0] * self.scale, span[1] * self.scale
                    down = np.pad(down, ((0, 0), (x0, heat.shape[1] - x0 - w)))
            if down is not None:
                render = functools.partial(render, heat_down=down)
            if action_cams is not None:
                render = functools.partial(
                    render,
                    action_heats=self.tile_heats(action_cams[i], frame.shape[:2], action_scales[i], span),
                    action_scale=float(action_scales[i]),
                    grid_info=tile_panel(self.explainer, panel, explained, i),
                )
            if hasattr(self.video, "submit"):  # FrameWriter, BackgroundFrames: may draw on a worker thread
                self.video.submit(render, frame, heat, panel)
            else:  # any list-like sink
                self.video.append(render(frame, heat, panel))

        game_over = np.array(["episode" in info for info in infos], dtype=bool)
        if self.trace is not None:
            if self.steps == 0:  # cam_input is rebuilt on load from cam and this placement
                placement = self.explainer.placement
                self.trace.set_meta(**{PLACEMENT_META: placement_meta(placement.to_input_y, placement.to_input_x)})
            row = dict(
                cam=explained.cam,
                action=explained.actions,
                score=explained.score,
                value=explained.value,
                action_values=explained.action_values,  # the panel's bars: the report's probabilities or Q-values
                reward=np.asarray(rewards, dtype=np.float32),
                done=np.asarray(dones, dtype=bool),
                game_over=game_over,
            )
            if action_cams is not None:
                row["action_cams"] = action_cams
            if explained.cam_down is not None:  # signed targets: what pushes the score down
                row["cam_down"] = explained.cam_down
            if explained.frame_shares.shape[1]:  # guided: each stacked frame's share of the map
                row["frame_shares"] = explained.frame_shares
            for name, centres in (objects or {}).items():
                row[f"obj_{name}"] = centres
            if explained.memory_effect is not None:  # recurrent: memory vs pixels
                row["memory_effect"] = explained.memory_effect
                row["pixel_effect"] = explained.pixel_effect
            if explained.input_shares is not None:  # Dict observations: each key's share, vector keys' elements
                row["input_shares"] = np.nan_to_num(explained.input_shares, nan=0.0)
                for key, attribution in explained.input_attributions.items():
                    row[f"attr_{key}"] = attribution
                for key, cams in (explained.key_cams or {}).items():  # other image keys' maps, input grid
                    row[f"key_cam_{key}"] = cams
            if self.save_obs:
                if isinstance(obs, dict):
                    row.update({f"obs_{key}": value for key, value in obs.items()})
                else:
                    row["obs"] = obs
            if self.n_envs == 1:  # a single env has no env axis
                row = {key: value[0] for key, value in row.items()}
            self.trace.append(**row)

        self.steps += 1
        self.games += int(game_over.sum())
        self.returns[game_over] = 0.0
        self.episode[game_over] += 1
        self.norm.end_episodes(game_over)
        self.action_norm.end_episodes(game_over)
        return game_over


def _elements(explained, i: int) -> np.ndarray | None:
    """The panel's element strip: every vector key's gradient x input per element, keys in order."""
    if not explained.input_attributions:
        return None
    return np.concatenate([np.asarray(a[i], np.float64).reshape(-1) for a in explained.input_attributions.values()])


def _shares(explained, i: int) -> np.ndarray | None:
    """The panel's share bars: each stacked frame's (guided), or each input key's (Dict observations)."""
    if explained.input_shares is not None:
        return np.nan_to_num(explained.input_shares[i], nan=0.0)
    return explained.frame_shares[i] if explained.frame_shares.shape[1] else None


def observation_frames(images: np.ndarray) -> list[np.ndarray]:
    """The newest frame of each observation image ``(N, C, H, W)`` as RGB ``(H, W, 3)`` uint8: the last
    three channels of an RGB stack, else the last channel as grey; float images in [0, 1] scaled to 255."""
    newest = images[:, -3:] if images.shape[1] % 3 == 0 else np.repeat(images[:, -1:], 3, axis=1)
    if newest.dtype != np.uint8:
        scale = 255.0 if float(np.nanmax(newest, initial=0.0)) <= 1.0 else 1.0
        newest = np.clip(np.nan_to_num(newest) * scale, 0, 255).astype(np.uint8)
    return list(np.ascontiguousarray(newest.transpose(0, 2, 3, 1)))


def auto_scale(frame_h: int) -> int:
    """The integer upscaling that makes the view about 630 px tall (Atari's 210 px frames: 3)."""
    return max(1, 630 // max(1, frame_h))


def action_panel(family, names: list[str], explained, i: int) -> dict:
    """The panel's action fields for env ``i``, by what the family's actions are."""
    action = np.asarray(explained.actions[i])
    bars = explained.action_values[i]
    if family.bar_kind in ("prob", "q"):
        return dict(action_names=names, action=int(action), bars=bars, bar_kind=family.bar_kind)
    if family.bar_kind == "component":  # the taken action's components, each within its bounds
        space = family.policy.action_space
        label = "  ".join(f"{v:+.2f}" for v in action.reshape(-1))
        value_label = "value" if hasattr(family.policy, "value_net") else "Q(s, a)"
        return dict(
            action_names=names,
            action=0,
            chosen=(),
            bars=action.reshape(-1).astype(np.float32),
            bar_kind="component",
            action_label=label,
            bounds=(space.low.reshape(-1), space.high.reshape(-1)),
            value_label=value_label,
        )
    # Structured: one row per choice of each part, the taken choice of every part marked.
    offsets = np.cumsum([0, *family.sizes[:-1]])
    rows = [f"{names[p] if p < len(names) else p}={k}" for p, size in enumerate(family.sizes) for k in range(size)]
    chosen = tuple(int(o + a) for o, a in zip(offsets, action.reshape(-1), strict=True))
    label = " ".join(str(int(a)) for a in action.reshape(-1))
    return dict(action_names=rows, action=chosen[0], chosen=chosen, bars=bars, bar_kind="parts", action_label=label)


def tile_panel(explainer, panel: PanelInfo, explained, i: int) -> PanelInfo:
    """The grid's captions: the panel itself for discrete actions (a tile per action), else a tile per
    component (its value) or per part (the taken choice's probability)."""
    family = explainer.family
    if family.bar_kind in ("prob", "q"):
        return panel
    tiles = family.tiles(explainer.target)
    labels = [label for label, _, _ in tiles]
    if tiles[0][1].startswith("q:"):  # a tile per critic: each critic's Q of the taken action
        values = explained.tile_scores[i] if explained.tile_scores is not None else np.full(len(tiles), np.nan)
        return dataclasses.replace(panel, action_names=labels, chosen=(), bars=values, bar_kind="q", tile_kind="critic")
    if family.bar_kind == "component":
        names = panel.action_names if len(panel.action_names) == len(labels) else labels
        return dataclasses.replace(panel, action_names=names, chosen=(), bar_kind="q", tile_kind="component")
    taken = np.asarray(panel.bars)[list(panel.chosen_rows())]
    return dataclasses.replace(
        panel, action_names=labels, action=0, chosen=(), bars=taken, bar_kind="parts", tile_kind="part"
    )


def _placed_indices(cam: np.ndarray, scale: float, ys: torch.Tensor, xs: torch.Tensor) -> np.ndarray:
    """``round(255 * clip(Ry cam Rx^T / scale, 0, 1))`` as uint8, for maps ``(..., h, w)``.

    The 255 / scale is folded into the small map before the two matmuls (in torch, so they obey
    the one torch thread setting); an all-zero scale gives an all-zero map.
    """
    factor = 255.0 / scale if scale > 0 else 0.0
    small = torch.from_numpy(np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0) * np.float32(factor))
    placed = (ys @ small @ xs.T).numpy()
    # Maps are rectified and the interpolation weights non-negative, so OpenCV's saturating
    # round-to-uint8 (one pass, ~3x faster than clamp + add + cast in torch) is the clip we need;
    # the absolute value it also takes changes nothing.
    if placed.ndim == 2:
        return cv2.convertScaleAbs(placed)
    return np.stack([cv2.convertScaleAbs(m) for m in placed])


def _loop(cfg, venv, env_id, explainer, names, video, trace, total, stop, on_step):
    """Returns (steps, games ended, interrupted, the env's failure or None, share of all-zero maps)."""
    # Continuous and structured actions show a tile per component or part by default, where the
    # explained layer can map them (not the critic's own extractor: ``Explainer.tile_problem``).
    tiles = cfg.all_actions or (not explainer.family.discrete and explainer.tile_problem() is None)
    writer = StepWriter(
        explainer,
        names,
        video,
        trace,
        n_envs=cfg.n_envs,
        norm=cfg.norm,
        scale=cfg.scale,
        alpha=cfg.alpha,
        save_obs=cfg.save_obs,
        all_actions=tiles,
    )
    obs = venv.reset()  # (N, C, H, W) uint8
    # Dict observations: the map is shown on the image key itself, since an env's render need not be
    # the agent's view (MiniGrid renders the whole grid; its agent sees a 7x7-cell window).
    image_key = explainer.image_key
    raw = frames(venv) if image_key is None else observation_frames(obs[image_key])  # N x (h, w, 3) uint8
    writer.scale = cfg.scale or auto_scale(raw[0].shape[0])
    starts = np.ones(cfg.n_envs, dtype=bool)  # a recurrent policy's memory starts fresh, as in predict
    while (
        not stop.requested
        and (total is None or writer.steps < total)
        and (cfg.episodes is None or writer.games < cfg.episodes)
        and (cfg.max_steps is None or writer.steps < cfg.max_steps)
    ):
        explained = explainer.explain(obs, all_actions=tiles, episode_start=starts)
        objects = positions(venv, env_id)  # read before stepping: where things were when the agent acted
        try:
            next_obs, rewards, dones, infos = venv.step(explained.actions)
        except Exception as exc:  # the env's own failure: keep what was recorded, then report it
            failure = f"the env raised {type(exc).__name__} ({exc}) at step {writer.steps}"
            return writer.steps, writer.games, stop.requested, failure, writer.zero_share()
        writer.write(obs, raw, explained, rewards, dones, infos, objects)
        obs, starts = next_obs, np.asarray(dones, dtype=bool)
        raw = frames(venv) if image_key is None else observation_frames(obs[image_key])
        if on_step is not None:
            on_step(writer.steps, total)
    return writer.steps, writer.games, stop.requested, None, writer.zero_share()
