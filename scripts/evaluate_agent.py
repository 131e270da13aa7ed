"""Score a saved SB3 agent with plain SB3, the protocol the model cards quote.

    python scripts/evaluate_agent.py agents/breakout_ppo.zip --games 10 --seed 100
    python scripts/evaluate_agent.py agents/minigrid_empty6_ppo.zip \
        --env rlcam.gridenvs:RlcamMiniGrid-Empty-Random-6x6-v0 --games 100 --seed 10000 --deterministic

Any env rlcam records works (``rlcam.envs.make_env``): for a non-Atari env a "game" is one episode,
ended by the env itself (termination or its own time limit, e.g. CarRacing's 1,000 steps), and the
success share (episodes with a positive return: MiniGrid's "goal reached") is printed too. An rl-zoo
run folder (or a zip inside one, e.g. ``scripts/train_carracing.py``'s) plays in its training env:
its wrappers, frame stack and frozen observation statistics (``rlcam.zoo``).

Protocol: ``--games`` envs built like training (SB3 ``make_atari_env``: noop reset,
frame skip 4, episodic life with fire reset, 84x84 grey, 4-frame stack), env i seeded
``seed + i``; each plays exactly one full game (until game over, not life loss; at
most ``--max-steps`` agent steps, 27,000 = 108,000 frames, the usual Atari cap). The
score is the unclipped game score. Actions come from ``model.predict`` - sampled
(``--stochastic``, default: the policy's distribution for PPO/A2C, epsilon-greedy with the
saved exploration rate for DQN/QR-DQN) or argmax (``--deterministic``). Prints mean +- std and
the per-game scores, and with ``--json`` writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlcam.agents import load_agent  # noqa: E402  (validates the zip, detects the algorithm)
from rlcam.envs import make_env  # noqa: E402
from rlcam.errors import RlcamError  # noqa: E402
from rlcam.zoo import agent_and_env  # noqa: E402


def evaluate(path: Path, env: str | None, games: int, seed: int, deterministic: bool, max_steps: int) -> dict:
    """Score ``path`` (an SB3 zip, or an rl-zoo run folder or a zip in one: its training env) in ``env``."""
    # SB3 samples PPO/A2C actions with torch's global generator; DQN's epsilon-greedy draws
    # "explore?" from numpy's and the random action from the action space's own generator
    # (seeded from the OS unless seeded here): all three seeded, so a sampled evaluation repeats.
    torch.manual_seed(seed)
    np.random.seed(seed)
    path, env = agent_and_env(Path(path), env)
    agent = load_agent(path)
    agent.model.action_space.seed(seed)
    venv, info = make_env(env, n_envs=games, seed=seed, agent_space=agent.model.observation_space)
    obs = venv.reset()
    scores = np.full(games, np.nan)
    lengths = np.zeros(games, dtype=np.int64)
    started = time.time()
    for _ in range(max_steps):
        actions, _ = agent.model.predict(obs, deterministic=deterministic)
        obs, _, _, infos = venv.step(actions)
        for i, item in enumerate(infos):
            if np.isnan(scores[i]):
                lengths[i] += 1
                if "episode" in item:
                    scores[i] = item["episode"]["r"]
        if not np.isnan(scores).any():
            break
    venv.close()
    capped = int(np.isnan(scores).sum())
    return dict(
        agent=str(path),
        sha256=agent.sha256,
        algo=agent.algo,
        env_id=info.env_id,
        atari=info.atari,
        games=games,
        seed=seed,
        actions="deterministic" if deterministic else "sampled",
        max_steps=max_steps,
        games_hitting_cap=capped,
        scores=[None if np.isnan(s) else float(s) for s in scores],
        lengths=lengths.tolist(),
        mean=float(np.nanmean(scores)) if capped < games else float("nan"),
        success_share=float(np.mean(np.nan_to_num(scores, nan=0.0) > 0)),
        std=float(np.nanstd(scores)) if capped < games else float("nan"),
        seconds=round(time.time() - started, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("agent", type=Path)
    parser.add_argument("--env", help="env name as for rlcam record (default: a run folder's own env, else Breakout)")
    parser.add_argument("--games", type=int, default=10)
    parser.add_argument("--seed", type=int, default=100)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", default=False)
    mode.add_argument("--deterministic", dest="deterministic", action="store_true")
    parser.add_argument("--max-steps", type=int, default=27_000)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        result = evaluate(args.agent, args.env, args.games, args.seed, args.deterministic, args.max_steps)
    except RlcamError as error:
        sys.exit(f"evaluate_agent: {error}")
    atari = result["atari"]
    digits = 1 if abs(result["mean"]) >= 10 else 3
    success = "" if atari else f"; success {result['success_share']:.0%}"
    print(
        f"{result['algo'].upper()} {result['env_id']} {result['actions']}: "
        f"{result['mean']:.{digits}f} +- {result['std']:.{digits}f} over {args.games} games{success} "
        f"(seeds {args.seed}..{args.seed + args.games - 1}; {result['games_hitting_cap']} hit the step cap; "
        f"{result['seconds']} s)"
    )
    print("scores:", result["scores"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
