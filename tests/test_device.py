"""``--device``: resolution, the one-sentence refusal without CUDA, traces unchanged on the CPU, and
every tensor the explainer makes following the policy's device.

No GPU is needed. Device placement is checked with the policy on PyTorch's ``meta`` device under a
dispatch mode (``OneDevice``) that fails any operation whose tensor arguments sit on two devices,
as CUDA does (a CPU tensor created without ``device=`` and combined with the policy's would fail on
a GPU; meta's own kernels let some such mixes through, e.g. ``cpu @ meta``, so the mode is needed).
Meta tensors hold no data: the maps' values are not checked here (``scripts/gpu_check.py`` compares
CPU and CUDA maps on a GPU), nor sampled actions (drawn on the CPU from the explainer's generator).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from rlcam.api import as_agent
from rlcam.cli import main
from rlcam.device import on_device, resolve_device
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer
from rlcam.video import load_trace
from tests.conftest import build_model
from tests.test_families import BOX, venv_for
from tests.test_fast_paths import _model

aten = torch.ops.aten
CUDA = torch.cuda.is_available()
_MOVES = {aten._to_copy.default, aten.copy_.default}  # .to(device) and copies may cross devices


class OneDevice(TorchDispatchMode):
    """Fails every op whose tensor arguments lie on more than one device (CPU 0-d scalars aside, as
    CUDA allows them), except the copies that move tensors; meta's data-dependent scalars read 0."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        devices = {t.device for t in tensors if not (t.dim() == 0 and t.device.type == "cpu")}
        if func not in _MOVES and len(devices) > 1:
            raise AssertionError(f"{func} mixes tensors on {', '.join(sorted(map(str, devices)))}")
        if func is aten._local_scalar_dense.default and tensors[0].device.type == "meta":
            return False if tensors[0].dtype == torch.bool else 0
        return func(*args, **kwargs)


@contextlib.contextmanager
def one_device():
    """OneDevice, with torch.distributions' argument checks (which read values) off meanwhile."""
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        with OneDevice():
            yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)


def _found_devices(explainer: Explainer, obs) -> dict[str, str]:
    """The device of every tensor ``Explainer._maps`` returns (the explained pass, its maps and tiles)."""
    obs_t = explainer._tensor(obs)
    state = explainer._step_state(len(obs), None)
    tiles = explainer.family.tiles(explainer.target) if explainer.tile_problem() is None else []
    found = explainer._maps(obs, obs_t, None, state, tiles)
    devices = {}
    for f in dataclasses.fields(found):
        value = getattr(found, f.name)
        if isinstance(value, torch.Tensor):
            devices[f.name] = str(value.device)
    assert {"cam", "cam_input", "score", "actions"} <= set(devices)
    if tiles:
        assert "action_cams" in devices
    return devices


def test_the_checker_catches_what_meta_alone_lets_through():
    assert str((torch.ones(2) @ torch.ones(2, 2, device="meta")).device) == "cpu"  # torch allows it on meta
    with one_device():
        with pytest.raises(AssertionError, match="mixes"):
            torch.ones(2) @ torch.ones(2, 2, device="meta")
        with pytest.raises(AssertionError, match="mixes"):
            torch.empty(3).index_put_((torch.arange(3),), torch.ones(3, device="meta"))
        assert (torch.ones(2, device="meta") * torch.tensor(2.0)).device.type == "meta"  # CPU scalars pass


def test_devices_resolve_and_bad_names_are_one_sentence():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")  # the default
    assert resolve_device("auto") == torch.device("cuda" if CUDA else "cpu")
    with pytest.raises(RlcamError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    if not CUDA:
        for name in ("cuda", "cuda:0", "CUDA:1"):
            with pytest.raises(RlcamError, match="needs a CUDA GPU"):
                resolve_device(name)


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("command", ["record", "check", "audit"])
def test_cuda_without_cuda_is_one_sentence_exit_2_and_no_file(command, agent_zips, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    baseline = tmp_path / "base.npz"
    if command == "check":  # a real baseline, so that only the device is wrong
        recorded = ["record", "--agent", agent_zips["ppo"], "--steps", 3, "--out", baseline.with_suffix(".mp4")]
        assert main([str(a) for a in recorded]) == 0
        capsys.readouterr()
    args = {
        "record": ["record", "--agent", agent_zips["ppo"], "--steps", 3, "--out", work / "x.mp4"],
        "check": ["check", "--agent", agent_zips["ppo"], "--baseline", baseline, "--json", work / "c.json"],
        "audit": ["audit", str(agent_zips["ppo"]), "--env", "Breakout", "--steps", 3, "--out", work / "audit"],
    }[command]
    code = main([str(a) for a in args] + ["--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlcam: error: --device cuda needs a CUDA GPU"), err
    assert "Traceback" not in err
    assert list(work.rglob("*")) == []


def test_cpu_and_auto_record_the_same_trace_and_say_where(agent_zips, tmp_path, capsys):
    traces = {}
    for device in ("cpu", "auto"):
        out = tmp_path / f"{device}.mp4"
        args = ["record", "--agent", agent_zips["qrdqn"], "--steps", 12, "--out", out, "--all-actions"]
        assert main([str(a) for a in args] + ["--device", device, "--n-envs", "2"]) == 0, capsys.readouterr().err
        traces[device] = load_trace(out.with_suffix(".npz"))
    cpu, auto = traces["cpu"], traces["auto"]
    assert cpu.meta["device"] == "cpu"
    assert auto.meta["device"] == ("cuda:0" if CUDA else "cpu")
    for key in ("cam", "cam_input", "action", "score", "value", "action_values", "action_cams"):
        if CUDA:  # other kernels: the same maps to float tolerance
            np.testing.assert_allclose(cpu[key], auto[key], rtol=1e-4, atol=1e-5 * float(np.abs(cpu[key]).max()))
        else:
            np.testing.assert_array_equal(cpu[key], auto[key])


# -- every tensor follows the policy's device ------------------------------------------------------------

METHODS = ("gradcam", "hirescam", "eigencam", "scorecam", "guided", "perturbation", "fine", "rise", "ig")
RECURRENT_METHODS = ("gradcam", "hirescam", "eigencam")  # the others are refused for recurrent agents
CASES = {  # kind -> (action space, targets)
    "ppo_discrete_mlp": (spaces.Discrete(3), ["logit", "value", "contrast:2"]),
    "ppo_box_tanh": (BOX, ["mean:0", "value"]),  # separate actor and critic extractors
    "ppo_sde": (BOX, ["mean:1"]),
    "sac": (BOX, ["mean:0", "q:min"]),
    "td3": (BOX, ["q"]),
    "tqc": (BOX, ["q:mean"]),
    "a2c_multidiscrete": (spaces.MultiDiscrete([3, 2, 4]), ["logit:1", "value"]),
    "ppo_multibinary": (spaces.MultiBinary(3), ["logprob"]),
    "dqn_mlp": (spaces.Discrete(3), ["advantage"]),
    "qrdqn_mlp": (spaces.Discrete(3), ["q"]),
    "recurrent": (spaces.Discrete(3), ["logit"]),
    "recurrent_box": (BOX, ["mean:2"]),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_every_family_computes_on_the_policys_device(kind):
    space, targets = CASES[kind]
    venv = venv_for(space, n=2, seed=4)
    model = _model(kind, venv)
    obs = venv.reset()
    venv.close()
    agent = as_agent(model)
    model.policy.to("meta")
    methods = RECURRENT_METHODS if "recurrent" in kind else METHODS
    with one_device():
        for target in targets:
            for method in methods if target == targets[0] else ("gradcam",):
                for fast in (True, False) if method == "gradcam" else (True,):
                    with Explainer(agent, target=target, method=method, fast=fast) as explainer:
                        devices = _found_devices(explainer, obs)
                    assert set(devices.values()) == {"meta"}, (kind, target, method, fast, devices)


@pytest.mark.parametrize("algo", ["ppo", "qrdqn"])
def test_the_natures_head_and_the_caches_follow_a_move_after_construction(algo, breakout_env, breakout_obs):
    """The hand-written NatureCNN head keeps derived weights (QR-DQN's rows averaged over quantiles, the
    critic's row), and RISE's masks and the placement are cached: all are made again on ``open``."""
    model = build_model(algo, breakout_env, seed=1)
    agent = as_agent(model)
    head, masks = Explainer(agent), Explainer(agent, method="rise")
    for explainer in (head, masks):  # used once on the CPU, so that their caches exist there
        with explainer:
            explainer.explain(breakout_obs[:1])
    assert head.gradient_path == "head" and masks._rise_masks is not None
    model.policy.to("meta")
    with one_device():
        for explainer in (head, masks):
            with explainer:
                assert set(_found_devices(explainer, breakout_obs[:2]).values()) == {"meta"}
    assert head.gradient_path == "head" and masks._rise_masks.device.type == "meta"


def test_on_device_leaves_a_callers_model_where_it_was(agent_zips):
    from rlcam.agents import load_agent

    agent = load_agent(agent_zips["dqn"])
    with on_device(agent, torch.device("cpu")) as used:
        assert used == torch.device("cpu")
    with on_device(agent, None) as used:
        assert used == torch.device("cpu")
    assert next(agent.policy.parameters()).device == torch.device("cpu")


# -- separate actor and critic extractors: the value's map and the actor's tiles ------------------------


def _unshared(kind: str, tmp_path):
    """A saved PPO whose actor and critic have their own NatureCNN (``share_features_extractor=False``)."""
    import stable_baselines3 as sb3

    from rlcam.envs import make_env

    env = {"box": "rlcam.toyenv:SteerToDot-v0", "parts": "rlcam.toyenv:SteerToDotParts-v0"}
    env = env.get(kind, "rlcam.toyenv:FindTarget-v0")
    venv, _ = make_env(env)
    kwargs = dict(share_features_extractor=False, features_extractor_kwargs=dict(features_dim=32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sb3.PPO("CnnPolicy", venv, n_steps=16, policy_kwargs=kwargs, seed=2, device="cpu")
    path = tmp_path / f"unshared_{kind}.zip"
    model.save(path)
    venv.close()
    return env, path


@pytest.mark.parametrize("kind", ["box", "parts"])
def test_value_with_the_actors_tiles_is_refused_up_front(kind, tmp_path, capsys):
    env, agent = _unshared(kind, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    args = ["record", "--env", env, "--agent", agent, "--steps", 4, "--target", "value", "--all-actions"]
    code = main([str(a) for a in args] + ["--out", str(work / "v.mp4")])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "do not pass through layer 'vf_features_extractor.cnn.5'" in lines[0], err
    assert "Traceback" not in err and list(work.iterdir()) == []
    # Without --all-actions the value's map is recorded, with no grid (its tiles would be the actor's).
    assert main([str(a) for a in args[:-1]] + ["--out", str(work / "v.mp4")]) == 0, capsys.readouterr().err
    trace = load_trace(work / "v.npz")
    assert trace.meta["layer"] == "vf_features_extractor.cnn.5" and "action_cams" not in trace
    assert np.isfinite(trace["cam"]).all() and (trace["cam"] >= 0).all()
    # An actor target keeps its tiles, from the actor's own extractor.
    with Explainer(as_agent(load_agent_cpu(agent)), target="logit" if kind == "parts" else "mean:0") as explainer:
        assert explainer.tile_problem() is None
        assert explainer.layer_name == "pi_features_extractor.cnn.5"


def load_agent_cpu(path):
    from rlcam.agents import load_agent

    return load_agent(path)


def test_value_tiles_of_a_discrete_agent_are_the_critics_map_for_every_action(tmp_path):
    """Discrete actor-critic: the value's tiles are the value itself (one per action), through the
    critic's own extractor: each equals the explained map."""
    from rlcam.envs import make_env

    env, path = _unshared("discrete", tmp_path)
    venv, _ = make_env(env, n_envs=2, seed=3)
    obs = venv.reset()
    venv.close()
    for fast in (True, False):
        with Explainer(load_agent_cpu(path), target="value", fast=fast) as explainer:
            assert explainer.tile_problem() is None
            explained = explainer.explain(obs, all_actions=True)
        assert explained.action_cams.shape[:2] == (2, 2)
        for a in range(2):
            np.testing.assert_allclose(explained.action_cams[:, a], explained.cam, rtol=1e-5, atol=1e-7)


def test_explain_refuses_the_actors_tiles_at_the_critics_layer(tmp_path):
    from rlcam.envs import make_env

    env, path = _unshared("box", tmp_path)
    venv, _ = make_env(env, n_envs=1, seed=0)
    obs = venv.reset()
    venv.close()
    for method in ("gradcam", "fine", "scorecam"):
        for fast in (True, False):
            with Explainer(load_agent_cpu(path), target="value", method=method, fast=fast) as explainer:
                with pytest.raises(RlcamError, match="separate features extractors"):
                    explainer.explain(obs, all_actions=True)
                assert explainer.explain(obs).action_cams is None  # the value's map alone is fine


def test_the_extras_passes_compute_on_the_policys_device():
    """Dict observations' gradient x input per key, and a recurrent policy's memory vs pixels."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage

    from tests.test_multi_input import DictEnv

    venv = VecTransposeImage(DummyVecEnv([DictEnv, DictEnv]))
    venv.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sb3.PPO("MultiInputPolicy", venv, n_steps=16, batch_size=16, seed=2, device="cpu")
    obs = venv.reset()
    venv.close()
    recurrent_venv = venv_for(spaces.Discrete(3), n=2, seed=4)
    recurrent = _model("recurrent", recurrent_venv)
    recurrent_obs = recurrent_venv.reset()
    recurrent_venv.close()
    for m in (model, recurrent):
        m.policy.to("meta")
    with one_device():
        with Explainer(as_agent(model), extras=True) as explainer:
            obs_t = explainer._tensor(obs)
            found = explainer._maps(obs, obs_t, None, None, [])
            shares, attributions = explainer._key_attributions(obs_t, explainer._outside(found.actions), None)
            assert shares.device.type == "meta" and attributions
            assert {a.device.type for a in attributions.values()} == {"meta"}
        with Explainer(as_agent(recurrent), extras=True) as explainer:
            obs_t = explainer._tensor(recurrent_obs)
            state = explainer._step_state(len(recurrent_obs), np.array([True, False]))
            found = explainer._maps(recurrent_obs, obs_t, None, state, [])
            effects = explainer._memory_vs_pixels(obs_t, found.actions, state, found.score)
            assert [e.device.type for e in effects] == ["meta", "meta"]


def test_gpu_check_refuses_without_cuda_and_writes_only_its_block(tmp_path, capsys):
    from scripts import gpu_check

    if not CUDA:
        assert gpu_check.main([]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err
    page = tmp_path / "b.md"
    page.write_text(f"before\n{gpu_check.BEGIN}\nold\n{gpu_check.END}\nafter\n")
    gpu_check.write_docs(page, "new table")
    assert page.read_text() == f"before\n{gpu_check.BEGIN}\nnew table\n{gpu_check.END}\nafter\n"
    assert gpu_check.rel_diff(np.array([2.0, -4.0]), np.array([2.0, -3.0])) == 0.25
