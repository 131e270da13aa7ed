"""rlcam's Python API, cell by cell: explain one observation, record through a VecEnv wrapper,
and watch attention in TensorBoard while a tiny PPO trains.

    python scripts/api_example.py                       # agents/breakout_ppo.zip, outputs in runs/api_example
    python scripts/api_example.py --agent my.zip --env Breakout --record-steps 200 --train-steps 2048
    tensorboard --logdir runs/api_example/tb            # the clips: IMAGES tab, rlcam/attention

The ``# %%`` cells also run one by one in an editor that knows them (VS Code, Jupyter via jupytext);
there the defaults apply.
"""

# %% Settings
import argparse
import sys
from pathlib import Path

parser = argparse.ArgumentParser(description="rlcam's Python API, cell by cell.")
parser.add_argument("--agent", default="agents/breakout_ppo.zip", help="SB3 zip of a pixel agent")
parser.add_argument("--env", default="Breakout", help="the env the agent plays (an rlcam env name)")
parser.add_argument("--record-steps", type=int, default=200, help="steps recorded through the wrapper")
parser.add_argument("--train-steps", type=int, default=2048, help="PPO steps trained on the toy env")
parser.add_argument("--out", default="runs/api_example", help="directory for videos, traces, TensorBoard")
args, _ = parser.parse_known_args(sys.argv[1:])  # known only: a notebook kernel passes its own
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

# %% 1. Load an agent and explain one observation: predict() as in SB3, plus the map.
from rlcam import ExplainedPolicy
from rlcam.envs import make_env

venv, _ = make_env(args.env, n_envs=1, seed=0)
explained = ExplainedPolicy(args.agent)
obs = venv.reset()  # (1, C, H, W) uint8
actions, _, explanation = explained.predict(obs, deterministic=True)
print(f"action {int(actions[0])}, explained {explained.explainer.target} {explanation.score[0]:+.4f}")
print(
    f"map {explanation.cam.shape[1:]} at {explained.explainer.layer_name}, {explanation.cam_input.shape[1:]} on the input"
)
print(f"action values {explanation.action_values[0].round(3)}, value {explanation.value[0]:+.3f}")

# %% 2. Record steps through the VecEnv wrapper; the agent acts with plain SB3 predict.
from rlcam import VecAttentionRecorder
from rlcam.video import load_trace

recorder = VecAttentionRecorder(
    venv, explained, out / "videos", step_trigger=lambda step: step == 0, video_length=args.record_steps
)
obs = recorder.reset()
for _ in range(args.record_steps):
    actions, _ = explained.model.predict(obs, deterministic=True)
    obs, rewards, dones, infos = recorder.step(actions)
recorder.close()
for video, trace in recorder.saved:
    print(f"recorded {video} and {trace} ({load_trace(trace).steps} steps)")

# %% 3. Train a tiny PPO on the toy env; the callback logs attention clips to TensorBoard.
from stable_baselines3 import PPO

from rlcam import AttentionCallback

toy = "rlcam.toyenv:FindTarget-v0"
train_env, _ = make_env(toy, n_envs=1, seed=0)
model = PPO(
    "CnnPolicy",
    train_env,
    n_steps=128,
    batch_size=64,
    n_epochs=2,
    seed=0,
    device="cpu",
    tensorboard_log=str(out / "tb"),
)
callback = AttentionCallback(toy, every=max(1, args.train_steps // 2), clip_steps=32, scale=2)
model.learn(args.train_steps, callback=callback)
train_env.close()
events = sorted((out / "tb").rglob("events.out.tfevents.*"))
print(f"logged {callback.clips_logged} attention clips to {', '.join(str(e) for e in events)}")
