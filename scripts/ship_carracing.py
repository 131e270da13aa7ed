"""Ship a CarRacing checkpoint of ``scripts/train_carracing.py`` into agents/ as an rl-zoo run folder.

    python scripts/ship_carracing.py runs/ppo/CarRacing-v3_1/rl_model_300000_steps.zip agents/carracing_ppo

The destination holds what ``rlcam record --agent agents/carracing_ppo`` and
``scripts/evaluate_agent.py agents/carracing_ppo`` need to rebuild the training env (``rlcam.zoo``):
``CarRacing-v3.zip`` (the checkpoint without its Adam moments and last rollout, so about a third of
the size; plain ``PPO.load`` still works), ``CarRacing-v3/config.yml``, ``args.yml`` and
``vecnormalize.pkl`` copied from the run. The slimmed zip must act as the checkpoint does (argmax
actions on 200 steps of the training env), else nothing is shipped. Then both action modes are scored
with ``evaluate_agent.py``'s protocol (10 episodes, env i seeded 100 + i) and the card
``<dst>.md`` and ``<dst>.eval.json`` are written beside the folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_agent import evaluate  # noqa: E402
from ship_agent import slim_copy  # noqa: E402

from rlcam.coverage import unseen  # noqa: E402
from rlcam.envs import make_env  # noqa: E402
from rlcam.zoo import agent_and_env  # noqa: E402

ENV = "CarRacing-v3"
PARAMS = ("config.yml", "args.yml", "vecnormalize.pkl")


def card(dst: Path, src: Path, sampled: dict, argmax: dict, steps: int, hours: float, model) -> str:
    size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    blind = unseen(model.policy, "features_extractor.cnn.5")
    seen = (
        "NatureCNN reads every pixel of its 64x64 input."
        if blind is None
        else f"Not every pixel reaches the network: {blind.sentence()} On this 64x64 view that is the lower "
        "half of the dashboard strip (the speed, ABS and steering bars are only partly visible to it) and "
        "the right edge of the track view."
    )

    def line(r):
        return f"{r['mean']:.1f} +- {r['std']:.1f} (per episode: {', '.join(f'{s:.0f}' for s in r['scores'])})"

    return f"""# {dst.name}: PPO on CarRacing-v3 from pixels

PPO (`CnnPolicy`, gSDE) trained by `scripts/train_carracing.py` with rl-zoo's CarRacing settings (frame
skip 2, 64x64 grey, 2 frames stacked, rewards normalised by VecNormalize), seed 0, stopped at
{steps:,} agent steps of the 4M the zoo trains ({hours:.2f} h of training on 2 CPU cores; source
checkpoint `{src}`). An rl-zoo run folder: `rlcam record --agent {dst}` plays it in its training env.

| actions | mean +- std over 10 episodes (env i seeded 100 + i) |
|---|---|
| argmax (`--deterministic`) | {line(argmax)} |
| sampled (gSDE noise, seeded) | {line(sampled)} |

Random driving scores about -50; an episode ends at the env's own limit (1,000 frames) or when the
car leaves the playfield. Size: {size / 1e6:.1f} MB (the zip without the optimizer state, plus the
VecNormalize statistics). sha256 of the zip: `{argmax["sha256"]}`.

Reproduce the scores:

    python scripts/evaluate_agent.py {dst} --games 10 --seed 100 --deterministic
    python scripts/evaluate_agent.py {dst} --games 10 --seed 100

{seen}

Versions: Python {platform.python_version()}, torch {torch.__version__}; scored on this project's
machine. Training progress (steps, steps/s, training score): `{dst.name}.progress.jsonl`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--games", type=int, default=10)
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = args.checkpoint.parent
    with tempfile.TemporaryDirectory(dir=args.dst.parent) as tmp:
        staged = Path(tmp) / args.dst.name  # built aside, moved in place only when it checks out
        (staged / ENV).mkdir(parents=True)
        for name in PARAMS:
            shutil.copy2(run / ENV / name, staged / ENV / name)
        shipped = staged / f"{ENV}.zip"

        def training_env(model):  # the run folder's env, as rlcam rebuilds it (rlcam.zoo)
            _, env = agent_and_env(staged, None)
            return make_env(env, n_envs=2, seed=0, agent_space=model.observation_space)[0]

        model = slim_copy(args.checkpoint, shipped, make_venv=training_env)
        argmax = evaluate(staged, None, args.games, args.seed, True, 27_000)
        sampled = evaluate(staged, None, args.games, args.seed, False, 27_000)
        progress = [json.loads(x) for x in (run / "progress.jsonl").read_text().splitlines() if x.strip()]
        steps = model.num_timesteps
        hours = max(p["elapsed_s"] for p in progress if p["steps"] <= steps) / 3600
        if args.dst.exists():
            shutil.rmtree(args.dst)
        staged.replace(args.dst)
    for r in (argmax, sampled):
        r["agent"] = str(args.dst)
    shutil.copy2(run / "progress.jsonl", args.dst.with_name(args.dst.name + ".progress.jsonl"))
    args.dst.with_name(args.dst.name + ".eval.json").write_text(
        json.dumps(dict(argmax=argmax, sampled=sampled), indent=1)
    )
    args.dst.with_name(args.dst.name + ".md").write_text(
        card(args.dst, args.checkpoint, sampled, argmax, steps, hours, model)
    )
    print(f"argmax {argmax['mean']:.1f} +- {argmax['std']:.1f}, sampled {sampled['mean']:.1f} +- {sampled['std']:.1f}")


if __name__ == "__main__":
    main()
