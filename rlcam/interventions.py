"""Object interventions (Atrey et al. 2020, "Exploratory Not Explanatory"): move one game object in
the emulator, rebuild what the agent would have seen, and measure how far the policy's output moves.

Recording: the agent plays an SB3 Atari VecEnv (``rlcam.envs.make_env``); before every step the
emulator's state (``ale.cloneState``, RNG included), the RAM and the action are kept beside the
observation.

Rebuilding the observation of step t: a private copy of the game, wrapped with SB3's own
``MaxAndSkipEnv`` and ``WarpFrame`` (the part of ``AtariWrapper`` that makes frames; the noop and
fire resets, the life and reward wrappers do not touch frames), is restored to the state of step
t - D (D = the frame-stack depth), the object is moved, and the agent's own D actions are replayed;
their D frames, oldest first, are the observation, as ``VecFrameStack`` stacks them. Every frame of
the stack then shows the moved object where the game's own dynamics put it. Replayed without the
move, this reproduces the recorded observation byte for byte; a state where it does not (an episode
boundary in the window, say) is not used.

    ALE state at t-D --move--> replay a_{t-D} .. a_{t-1} --> D frames --> obs' (D, 84, 84)
                                                                          obs  (recorded, = the replay without the move)

Two ways to move an object:

- a RAM write (``RAM_MOVES``): the object's x position byte shifted by dx at t - D. Breakout's and
  Pong's balls move this way (checked against the rendered frames in tests);
- the game's own controls (``CONTROL_MOVES``): ALE emulates the paddle controller outside the RAM, so
  a write to Breakout's paddle byte (72) is overwritten on the next frame (measured). The paddle is
  moved instead by replacing the agent's action one step earlier (t - D - 1) with LEFT or RIGHT and
  replaying the same D actions after it.

A counterfactual counts only when, at step t, the moved object is at least ``MIN_SHIFT`` px from
where it is without the move and every other object the RAM locator knows (``rlcam.objects``) is
where it was. The object's counterfactual importance is the mean over its counterfactuals of
``||s(obs') - s(obs)||_2`` (s: logits or Q-values) and of ``|V(obs') - V(obs)|``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rlcam.errors import RlcamError
from rlcam.objects import game_name, locator_for

RAM_MOVES = {  # game -> object -> RAM address of its x position (1 px per unit)
    "Breakout": {"ball": 99},
    "Pong": {"ball": 49},
}
FIELDS = {"Breakout": (10.0, 149.0), "Pong": (22.0, 137.0)}  # x range a moved object may land in (frame px)
CONTROL_MOVES = {  # game -> object -> the two actions (by meaning) that push it one way and the other
    "Breakout": {"paddle": ("LEFT", "RIGHT")},
    "Pong": {"player": ("RIGHT", "LEFT")},
}
SHIFTS = (5, 15)  # px: RAM moves shift by a whole number drawn from this range, once left and once right
MIN_SHIFT = 2.0  # px: a counterfactual whose object moved less than this at step t is dropped
FRAME_HW = (210, 160)  # the raw Atari frame


@dataclass
class Recording:
    """One seeded rollout: what the agent saw, did, and the emulator state before each step."""

    env_id: str
    obs: np.ndarray  # (T, D, H, W) uint8, the agent's observations
    actions: np.ndarray  # (T,) the actions taken
    rams: np.ndarray  # (T, 128) uint8, the RAM when obs[t] was seen
    states: list = field(repr=False, default_factory=list)  # T ALE states, before step t
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (T,) obs[t] begins an episode


def record(agent, env: str, steps: int, seed: int) -> Recording:
    """The agent plays ``env`` deterministically for ``steps`` steps; every state is kept."""
    from rlcam.envs import check_compatible, make_env
    from rlcam.explainer import Explainer

    venv, info = make_env(env, n_envs=1, seed=seed, agent_space=agent.model.observation_space)
    try:
        check_compatible(venv, agent.model.observation_space, agent.model.action_space, info.env_id)
        if not info.atari:
            raise RlcamError(f"object interventions need an Atari game; {info.env_id} is not one.")
        ale = venv.envs[0].unwrapped.ale
        obs, start = venv.reset(), True
        seen, actions, rams, states, starts = [], [], [], [], []
        with Explainer(agent) as explainer:
            for _ in range(steps):
                seen.append(obs[0])
                states.append(ale.cloneState(include_rng=True))
                rams.append(ale.getRAM().copy())
                starts.append(start)
                action = explainer.explain(obs).actions
                actions.append(int(action[0]))
                obs, _, dones, _ = venv.step(action)
                start = bool(dones[0])
    finally:
        venv.close()
    return Recording(info.env_id, np.stack(seen), np.array(actions), np.stack(rams), states, np.array(starts))


class Replayer:
    """A private copy of the game that replays recorded states and actions into observations."""

    def __init__(self, env_id: str, depth: int, size: tuple[int, int] = (84, 84)):
        import gymnasium as gym
        from stable_baselines3.common.atari_wrappers import MaxAndSkipEnv, WarpFrame

        kwargs = {} if gym.spec(env_id).kwargs.get("frameskip", 1) == 1 else {"frameskip": 1}
        self.env = WarpFrame(MaxAndSkipEnv(gym.make(env_id, **kwargs), skip=4), width=size[1], height=size[0])
        self.env.reset(seed=0)
        self.ale = self.env.unwrapped.ale
        self.depth = depth
        self.meanings = self.env.unwrapped.get_action_meanings()

    def replay(self, state, actions, write: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Restore ``state``, write ``(address, value)`` to the RAM if given, step ``actions``.

        Returns the last ``depth`` frames stacked ``(depth, H, W)`` uint8 and the RAM at the end.
        """
        self.ale.restoreState(state)
        if write is not None:
            self.ale.setRAM(write[0], write[1])
        frames = [self.env.step(int(a))[0][..., 0] for a in actions]
        return np.stack(frames[-self.depth :]), self.ale.getRAM().copy()

    def close(self) -> None:
        self.env.close()


@dataclass
class Counterfactual:
    obj: str
    t: int  # the recording step whose observation was rebuilt
    obs: np.ndarray  # (D, H, W) uint8, what the agent would have seen
    shift: float  # px the object moved at step t (Euclidean, frame pixels)
    how: str  # e.g. "ram x-7", "action LEFT at t-5"


def usable(rec: Recording, t: int, depth: int) -> bool:
    """Whether step t has ``depth + 1`` steps of the same episode before it (a control move needs them)."""
    return t >= depth + 1 and not rec.starts[t - depth : t + 1].any()


def counterfactuals(rec: Recording, t: int, replayer: Replayer, rng: np.random.Generator) -> tuple[bool, list]:
    """The valid counterfactuals of step t for every object the game's table moves.

    Returns ``(reference_ok, counterfactuals)``; ``reference_ok`` is False (and the list empty) when
    replaying without a move does not give back the recorded observation.
    """
    game = game_name(rec.env_id)
    locate = locator_for(rec.env_id)
    d = replayer.depth
    window = rec.actions[t - d : t]
    reference, ref_ram = replayer.replay(rec.states[t - d], window)
    earlier, _ = replayer.replay(rec.states[t - d - 1], rec.actions[t - d - 1 : t])
    if not (np.array_equal(reference, rec.obs[t]) and np.array_equal(earlier, rec.obs[t])):
        return False, []
    if locate is None:
        return True, []
    where = locate(ref_ram)
    out = []
    for obj, address in RAM_MOVES.get(game, {}).items():
        before = locate(rec.rams[t - d])[obj]
        if before is None or where[obj] is None:
            continue
        low, high = FIELDS[game]
        for sign in (-1, 1):
            dx = sign * int(rng.integers(SHIFTS[0], SHIFTS[1] + 1))
            if not low <= before[1] + dx <= high:
                continue
            value = int(rec.rams[t - d][address]) + dx
            obs, ram = replayer.replay(rec.states[t - d], window, write=(address, value))
            found = _only_moved(locate(ram), where, obj)
            if found is not None:
                out.append(Counterfactual(obj, t, obs, found, f"ram x{dx:+d}"))
    for obj, pushes in CONTROL_MOVES.get(game, {}).items():
        if where.get(obj) is None:
            continue
        for meaning in pushes:
            action = replayer.meanings.index(meaning)
            if action == rec.actions[t - d - 1]:
                continue
            actions = [action, *window]
            obs, ram = replayer.replay(rec.states[t - d - 1], actions)
            found = _only_moved(locate(ram), where, obj)
            if found is not None:
                out.append(Counterfactual(obj, t, obs, found, f"action {meaning} at t-{d + 1}"))
    return True, out


def _only_moved(now: dict, before: dict, obj: str) -> float | None:
    """How far ``obj`` moved (px) when it moved at least ``MIN_SHIFT`` and nothing else did; else None."""
    if now[obj] is None or any(now[k] != before[k] for k in before if k != obj):
        return None
    shift = float(np.hypot(now[obj][0] - before[obj][0], now[obj][1] - before[obj][1]))
    return shift if shift >= MIN_SHIFT else None


def frame_to_input(centre, input_hw: tuple[int, int], frame_hw: tuple[int, int] = FRAME_HW) -> np.ndarray:
    """A frame pixel ``(y, x)`` on the input grid (``WarpFrame``'s area resize: pixel centres scale)."""
    if centre is None:
        return np.array([np.nan, np.nan])
    return np.array([(c + 0.5) * n / f - 0.5 for c, n, f in zip(centre, input_hw, frame_hw, strict=True)])
