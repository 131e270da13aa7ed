"""Every SB3 / sb3-contrib pixel-policy family loads safely and equals SB3's own load.

Each family is a tiny untrained agent on 36x36x3 images (NatureCNN's smallest input), saved and
loaded twice: by rlcam with every unpickler disabled, and by SB3's ``Cls.load``. Also here: zips as
SB3 1.x wrote them (gym spaces, ``shape``, numpy 1.x pickles), planted payloads, classes from the
user's code (``custom_objects``), and the one-line messages ``rlcam info`` gives for what it refuses.
"""

from __future__ import annotations

import base64
import collections
import copyreg
import io
import json
import pickle
import re
import sys
import types
import warnings
import zipfile
from pathlib import Path

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticCnnPolicy
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from rlcam.agents import ALGOS, algo_class, load_agent
from rlcam.cli import main
from rlcam.errors import RlcamError

IMAGE = spaces.Box(0, 255, (36, 36, 3), np.uint8)  # channel-last: SB3 transposes it to (3, 36, 36)
DICT = spaces.Dict(
    {
        "img": IMAGE,
        "vec": spaces.Box(np.array([-1.0, 0.0, -2.0], np.float32), np.array([1.0, 5.0, 2.0], np.float32)),
        "mode": spaces.Discrete(3),
    }
)
STEER = spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 2.0], np.float32))  # asymmetric bounds
ON_POLICY = dict(n_steps=8, batch_size=8)
REPLAY = dict(buffer_size=16, learning_starts=0)
GSDE_SQUASHED = dict(ON_POLICY, use_sde=True, policy_kwargs=dict(squash_output=True))
QUANTILES = dict(REPLAY, policy_kwargs=dict(n_quantiles=5))
LSTM = dict(ON_POLICY, policy_kwargs=dict(lstm_hidden_size=16))
TF_RMSPROP = dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(alpha=0.99, eps=1e-5, weight_decay=0))


class TinyEnv(gym.Env):
    """Random observations of the given spaces; only their spaces matter to a saved agent."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


# name -> (algo, policy, observation space, action space, constructor kwargs)
FAMILIES = {
    "ppo box": ("ppo", "CnnPolicy", IMAGE, STEER, ON_POLICY),
    "ppo gsde squashed": ("ppo", "CnnPolicy", IMAGE, STEER, GSDE_SQUASHED),
    "a2c multidiscrete": ("a2c", "CnnPolicy", IMAGE, spaces.MultiDiscrete([3, 2, 4]), dict(n_steps=8)),
    "ppo multibinary": ("ppo", "CnnPolicy", IMAGE, spaces.MultiBinary(3), ON_POLICY),
    "ppo dict": ("ppo", "MultiInputPolicy", DICT, spaces.Discrete(3), ON_POLICY),
    "a2c dict box": ("a2c", "MultiInputPolicy", DICT, STEER, dict(n_steps=8, policy_kwargs=TF_RMSPROP)),
    "dqn dict": ("dqn", "MultiInputPolicy", DICT, spaces.Discrete(3), REPLAY),
    "qrdqn dict": ("qrdqn", "MultiInputPolicy", DICT, spaces.Discrete(3), QUANTILES),
    "sac cnn": ("sac", "CnnPolicy", IMAGE, STEER, dict(REPLAY, policy_kwargs=dict(optimizer_class=torch.optim.AdamW))),
    "sac dict gsde": ("sac", "MultiInputPolicy", DICT, STEER, dict(REPLAY, use_sde=True)),
    "td3 cnn": ("td3", "CnnPolicy", IMAGE, STEER, REPLAY),
    "td3 dict": ("td3", "MultiInputPolicy", DICT, STEER, REPLAY),
    "ddpg cnn": ("ddpg", "CnnPolicy", IMAGE, STEER, REPLAY),
    "ddpg dict": ("ddpg", "MultiInputPolicy", DICT, STEER, REPLAY),
    "tqc cnn": ("tqc", "CnnPolicy", IMAGE, STEER, QUANTILES),
    "recurrent cnn": ("recurrent_ppo", "CnnLstmPolicy", IMAGE, spaces.Discrete(3), LSTM),
    "recurrent dict box": ("recurrent_ppo", "MultiInputLstmPolicy", DICT, STEER, LSTM),
}  # fmt: skip


def build(algo: str, policy, obs_space, act_space, seed: int = 0, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return algo_class(algo)(policy, TinyEnv(obs_space, act_space), seed=seed, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def family_zips(tmp_path_factory):
    """name -> (path of the saved untrained agent, the model that was saved)."""
    root = tmp_path_factory.mktemp("families")
    torch.set_num_threads(1)  # module-scoped: runs before conftest's per-test one-thread fixture
    saved = {}
    for i, (name, (algo, policy, obs_space, act_space, kwargs)) in enumerate(FAMILIES.items()):
        model = build(algo, policy, obs_space, act_space, seed=i, **kwargs)
        path = root / f"{name.replace(' ', '_')}.zip"
        model.save(path)
        saved[name] = (path, model)
    return saved


def observations(space, n: int, seed: int = 0):
    """A batch of n observations of ``space`` (a dict of batches for a Dict)."""
    space = space if isinstance(space, spaces.Dict) else spaces.Dict({"x": space})
    space.seed(seed)
    batch = {key: np.stack([member.sample() for _ in range(n)]) for key, member in space.spaces.items()}
    return batch if list(batch) != ["x"] else batch["x"]


def safe_load(path, monkeypatch, **kwargs):
    """load_agent with every unpickler raising: proof that nothing in the file was unpickled."""

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the safe load unpickled something")

    with monkeypatch.context() as patch:
        for module, name in ((pickle, "loads"), (pickle, "load"), (cloudpickle, "loads"), (cloudpickle, "load")):
            patch.setattr(module, name, no_unpickling)
        return load_agent(path, **kwargs)


def sb3_load(algo: str, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return algo_class(algo).load(path, device="cpu")


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def assert_same_space(a, b):
    """Equal spaces, checked field by field (gymnasium's == compares these too, but say which differs)."""
    assert type(a) is type(b)
    if isinstance(a, spaces.Dict):
        assert list(a.spaces) == list(b.spaces)
        for key in a.spaces:
            assert_same_space(a[key], b[key])
    elif isinstance(a, spaces.Box):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
        np.testing.assert_array_equal(a.low, b.low)
        np.testing.assert_array_equal(a.high, b.high)
    elif isinstance(a, spaces.Discrete):
        assert (a.n, a.start, a.dtype) == (b.n, b.start, b.dtype)
    elif isinstance(a, spaces.MultiDiscrete):
        np.testing.assert_array_equal(a.nvec, b.nvec)
        np.testing.assert_array_equal(a.start, b.start)
        assert a.dtype == b.dtype
    elif isinstance(a, spaces.MultiBinary):
        assert (a.n, a.dtype) == (b.n, b.dtype)
    assert a == b


def assert_same_actions(safe, reference, obs_space, recurrent: bool, steps: int = 6):
    """Deterministic actions (and LSTM states) equal on the same observations, over a few steps."""
    state_a = state_b = None
    starts = np.array([[True, True]] + [[t == 3, False] for t in range(1, steps)])  # env 0 restarts at step 3
    for t in range(steps):
        obs = observations(obs_space, 2, seed=t)
        kwargs = dict(episode_start=starts[t]) if recurrent else {}
        got, state_a = safe.predict(obs, state=state_a, deterministic=True, **kwargs)
        expected, state_b = reference.predict(obs, state=state_b, deterministic=True, **kwargs)
        np.testing.assert_array_equal(got, expected)
        if recurrent:
            for x, y in zip(state_a, state_b, strict=True):
                np.testing.assert_array_equal(x, y)


# -- every family: the safe load equals SB3's own ------------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_loads_safely_and_equals_sb3(name, family_zips, monkeypatch):
    algo = FAMILIES[name][0]
    path, original = family_zips[name]
    agent = safe_load(path, monkeypatch)
    reference = sb3_load(algo, path)
    assert agent.algo == algo and isinstance(agent.model, algo_class(algo))
    assert type(agent.policy) is type(reference.policy) is type(original.policy)
    cls = type(reference.policy)
    assert agent.policy_class_name == f"{cls.__module__}.{cls.__qualname__}"
    assert_same_weights(agent.policy, reference.policy)
    assert_same_weights(agent.policy, original.policy)
    for field in ("observation_space", "action_space"):
        assert_same_space(getattr(agent.model, field), getattr(reference, field))
        assert_same_space(getattr(agent.model, field), getattr(original, field))
    assert agent.model.policy_kwargs == reference.policy_kwargs
    optimizers = [
        [type(m.optimizer) for m in p.modules() if hasattr(m, "optimizer")] for p in (agent.policy, reference.policy)
    ]
    assert optimizers[0] == optimizers[1] and optimizers[0]  # Adam, AdamW, RMSpropTFLike, ...; actor's and critic's
    assert [m.training for m in agent.policy.modules()] == [m.training for m in reference.policy.modules()]
    recurrent = algo == "recurrent_ppo"
    assert_same_actions(agent.model, reference, original.observation_space, recurrent)
    assert_same_actions(agent.model, original, original.observation_space, recurrent)
    for alias in ("actor", "actor_target", "critic", "critic_target", "q_net", "quantile_net"):
        if hasattr(reference, alias):  # the algorithm's shortcuts point into the loaded policy
            assert getattr(agent.model, alias) is agent.policy.get_submodule(alias), alias


def test_families_cover_every_algorithm():
    assert {algo for algo, *_ in FAMILIES.values()} == set(ALGOS)
    assert set(ALGOS) == {"ppo", "a2c", "dqn", "qrdqn", "sac", "td3", "ddpg", "tqc", "recurrent_ppo"}


def test_ddpg_and_td3_told_apart_by_their_fields(family_zips):
    # DDPG is TD3 with policy_delay 1, target_noise_clip 0 and target_policy_noise 0.1; both pickle td3 classes.
    for name, algo in (("td3 cnn", "td3"), ("ddpg cnn", "ddpg"), ("ddpg dict", "ddpg")):
        data = json.loads(zipfile.ZipFile(family_zips[name][0]).read("data"))
        assert data["policy_class"]["__module__"] == "stable_baselines3.td3.policies"
        assert load_agent(family_zips[name][0]).algo == algo


# -- weights are checked in every network ---------------------------------------------------------------


def tensor_file(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def rewrite(src: Path, dst: Path, data: dict | None = None, **members: bytes | None) -> Path:
    """Copy an agent zip, replacing its JSON ``data`` and/or members (``None`` drops one)."""
    members = {name.replace("_pth", ".pth"): value for name, value in members.items()}
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for name in old.namelist():
            content = old.read(name)
            if name == "data" and data is not None:
                content = json.dumps(data).encode()
            content = members.get(name, content)
            if content is not None:
                new.writestr(name, content)
    return dst


WEIGHTS = {  # family -> a tensor outside the actor's own path: critics, targets, quantile critics, LSTMs
    "sac cnn": "critic_target.qf1.0.weight",
    "td3 cnn": "actor_target.mu.0.weight",
    "ddpg dict": "critic.features_extractor.extractors.img.cnn.0.weight",
    "tqc cnn": "critic.qf1.4.weight",  # the second quantile critic's output: 5 quantiles
    "recurrent cnn": "lstm_actor.weight_hh_l0",
    "recurrent dict box": "lstm_critic.weight_ih_l0",
}


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_weights_checked_in_every_network(name, family_zips, tmp_path):
    path = family_zips[name][0]
    key = WEIGHTS[name]
    name_re = re.escape(key)
    state = torch.load(io.BytesIO(zipfile.ZipFile(path).read("policy.pth")), weights_only=True)
    assert key in state, sorted(state)
    bad = dict(state, **{key: state[key].clone()})
    bad[key].view(-1)[0] = float("nan")
    with pytest.raises(RlcamError, match=rf"non-finite weights \(NaN or inf\), first in {name_re};"):
        load_agent(rewrite(path, tmp_path / "nan.zip", policy_pth=tensor_file(bad)))
    wrong = dict(state, **{key: torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)})
    with pytest.raises(
        RlcamError, match=rf"{name_re} has shape .* where the policy has {re.escape(str(tuple(state[key].shape)))};"
    ):
        load_agent(rewrite(path, tmp_path / "shape.zip", policy_pth=tensor_file(wrong)))
    missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises(RlcamError, match=rf"1 missing, e\.g\. '{name_re}'"):
        load_agent(rewrite(path, tmp_path / "missing.zip", policy_pth=tensor_file(missing)))


# -- zips as SB3 1.x wrote them ------------------------------------------------------------------------

GYM_NAMES = {  # gymnasium class -> the gym class SB3 1.x pickled
    spaces.Box: ("gym.spaces.box", "Box"),
    spaces.Discrete: ("gym.spaces.discrete", "Discrete"),
    spaces.MultiDiscrete: ("gym.spaces.multi_discrete", "MultiDiscrete"),
    spaces.MultiBinary: ("gym.spaces.multi_binary", "MultiBinary"),
    spaces.Dict: ("gym.spaces.dict", "Dict"),
}
NUMPY1_NAMES = {  # numpy 2's pickle helpers -> their numpy 1.x names
    np._core.numeric._frombuffer: ("numpy.core.numeric", "_frombuffer"),
    np._core.multiarray._reconstruct: ("numpy.core.multiarray", "_reconstruct"),
    np._core.multiarray.scalar: ("numpy.core.multiarray", "scalar"),
}


def gym_state(space, eager_rng: bool) -> dict:
    """A space's ``__dict__`` as gym <= 0.19 held it: ``shape`` (not ``_shape``), no ``start``, no ``low_repr``.

    ``eager_rng``: gym <= 0.17 seeded a RandomState in the constructor (``np_random``); 0.18/0.19
    kept ``_np_random = None`` until first sampled.
    """
    if isinstance(space, spaces.Box):
        state = dict(dtype=space.dtype, shape=space.shape, low=space.low, high=space.high)
        state.update(bounded_below=space.bounded_below, bounded_above=space.bounded_above)
    elif isinstance(space, spaces.Discrete):
        state = dict(n=int(space.n), shape=(), dtype=np.dtype(np.int64))
    elif isinstance(space, spaces.MultiDiscrete):
        state = dict(nvec=space.nvec, shape=space.shape, dtype=space.dtype)
    elif isinstance(space, spaces.MultiBinary):
        state = dict(n=space.n, shape=space.shape, dtype=np.dtype(np.int8))
    else:
        state = dict(spaces=collections.OrderedDict(sorted(space.spaces.items())), shape=None, dtype=None)
    if eager_rng:
        state["np_random"] = np.random.RandomState(0)
    else:
        state["_np_random"] = None
    return state


def gym_repr(space) -> str:
    """gym 0.19's repr (what SB3 1.x wrote for a Dict's members in the JSON)."""
    if isinstance(space, spaces.Box):
        return f"Box({space.low.min()}, {space.high.max()}, {space.shape}, {space.dtype})"
    if isinstance(space, spaces.Discrete):
        return f"Discrete({space.n})"
    return repr(space)


class SB3v1Pickler(pickle._Pickler):
    """Pickles as cloudpickle did under SB3 1.x: gym spaces with gym's attributes, numpy 1.x's helper names.

    cloudpickle pickles importable classes by reference with the standard reductions, so the
    standard pickler gives the same bytes once the names are the old ones.
    """

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[types.FunctionType] = lambda self, obj: self.save_global(obj)  # the base table bypasses overrides

    def __init__(self, file, protocol: int, eager_rng: bool):
        super().__init__(file, protocol)
        self.eager_rng = eager_rng

    def reducer_override(self, obj):
        if type(obj) in GYM_NAMES:
            return copyreg.__newobj__, (type(obj),), gym_state(obj, self.eager_rng)
        return NotImplemented

    def save_global(self, obj, name=None):
        renamed = GYM_NAMES.get(obj) if isinstance(obj, type) else None
        renamed = renamed or next((v for k, v in NUMPY1_NAMES.items() if k is obj), None)
        if renamed is None:
            return super().save_global(obj, name)
        self.save(renamed[0])
        self.save(renamed[1])
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def sb3_v1_entry(space, protocol: int, eager_rng: bool) -> dict:
    """The JSON SB3 1.x's ``data_to_json`` wrote for a gym space: type, blob, then each attribute."""
    buffer = io.BytesIO()
    SB3v1Pickler(buffer, protocol, eager_rng).dump(space)
    module, name = GYM_NAMES[type(space)]
    entry = {":type:": f"<class '{module}.{name}'>", ":serialized:": base64.b64encode(buffer.getvalue()).decode()}
    for key, value in gym_state(space, eager_rng).items():
        if key == "spaces":
            value = "OrderedDict([" + ", ".join(f"({k!r}, {gym_repr(v)})" for k, v in value.items()) + "])"
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        entry[key] = list(value) if isinstance(value, tuple) else value
    return entry


def constant_fn(value: float):
    def func(_):
        return value

    return func  # a closure: cloudpickle stores it by value, as SB3 1.x's lr_schedule


def as_sb3_v1(src: Path, dst: Path, model, protocol: int, eager_rng: bool = False) -> Path:
    """A current zip rewritten the way SB3 1.x (gym <= 0.19, numpy 1.x) wrote it.

    Spaces: gym classes whose JSON and pickled state say ``shape``; schedules: closures pickled by
    value; PPO/A2C weights without the pi_/vf_features_extractor copies (SB3 < 1.7).
    """
    data = json.loads(zipfile.ZipFile(src).read("data"))
    for field in ("observation_space", "action_space"):
        data[field] = sb3_v1_entry(getattr(model, field), protocol, eager_rng)
    for field in ("lr_schedule", "clip_range"):
        if field in data:
            data[field] = {
                ":type:": "<class 'function'>",
                ":serialized:": base64.b64encode(cloudpickle.dumps(constant_fn(3e-4))).decode(),
            }
    state = torch.load(io.BytesIO(zipfile.ZipFile(src).read("policy.pth")), weights_only=True)
    old = {k: v for k, v in state.items() if not k.startswith(("pi_features_extractor.", "vf_features_extractor."))}
    return rewrite(src, dst, data=data, policy_pth=tensor_file(old), _stable_baselines3_version=b"1.5.0")


SB3_V1 = ["ppo box", "a2c multidiscrete", "ppo multibinary", "dqn dict", "sac cnn", "recurrent dict box"]


@pytest.mark.parametrize("protocol", [4, 5])  # Python 3.7's cloudpickle wrote protocol 4, 3.8+ protocol 5
@pytest.mark.parametrize("name", SB3_V1)
def test_sb3_v1_zip_loads_safely(name, protocol, family_zips, tmp_path, monkeypatch):
    algo = FAMILIES[name][0]
    path, original = family_zips[name]
    legacy = as_sb3_v1(path, tmp_path / "v1.zip", original, protocol, eager_rng=name == "ppo box")
    data = json.loads(zipfile.ZipFile(legacy).read("data"))
    for field in ("observation_space", "action_space"):  # the fixture is what SB3 1.x wrote
        assert "_shape" not in data[field] and data[field][":type:"].startswith("<class 'gym.spaces.")
        blob = base64.b64decode(data[field][":serialized:"])
        assert b"gymnasium" not in blob and b"numpy._core" not in blob and b"_shape" not in blob
    assert data["observation_space"].get("shape", "dict") in ([3, 36, 36], None)
    agent = safe_load(legacy, monkeypatch)
    reference = sb3_load(algo, path)  # SB3 itself cannot read the legacy zip without gym installed
    assert agent.algo == algo
    assert_same_weights(agent.policy, reference.policy)
    assert_same_space(agent.model.observation_space, reference.observation_space)
    assert_same_space(agent.model.action_space, reference.action_space)
    assert_same_actions(agent.model, reference, original.observation_space, algo == "recurrent_ppo")


# -- a planted payload never runs -----------------------------------------------------------------------


class Plant:
    """Unpickling this creates the directory ``marker``: proof that a file's pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def plant(entry: dict, payload) -> dict:
    return {**(entry or {}), ":serialized:": base64.b64encode(cloudpickle.dumps(payload)).decode()}


def dict_with_payload(marker: Path):
    """DICT with one member swapped for the payload, deep inside the space's pickle."""
    space = spaces.Dict(dict(DICT.spaces))
    space.spaces["vec"] = Plant(marker)
    return space


PLANTS = {  # (family, field, payload) -> what the safe load does: None loads (it never needs that blob)
    "dict observation space": ("ppo dict", "observation_space", Plant, r"Dict observation space whose pickled members"),
    "inside a dict member": ("dqn dict", "observation_space", dict_with_payload, r"key 'vec' holds posix\.mkdir"),
    "multidiscrete actions": ("a2c multidiscrete", "action_space", Plant, None),  # nvec and start from the JSON
    "multibinary actions": ("ppo multibinary", "action_space", Plant, None),
    "box actions": ("sac cnn", "action_space", Plant, None),  # short bounds: the JSON repr is exact
    "sac policy_kwargs": ("sac cnn", "policy_kwargs", Plant, r"posix\.mkdir in policy_kwargs"),
    "tqc policy_class": ("tqc cnn", "policy_class", Plant, r"posix\.mkdir as policy_class"),
}


@pytest.mark.parametrize("case", sorted(PLANTS))
def test_planted_payload_never_runs(case, family_zips, tmp_path):
    name, field, payload, refusal = PLANTS[case]
    algo = FAMILIES[name][0]
    path, original = family_zips[name]
    marker = tmp_path / "pwned"
    data = json.loads(zipfile.ZipFile(path).read("data"))
    data[field] = plant(data[field], payload(marker))
    planted = rewrite(path, tmp_path / "planted.zip", data=data)
    try:
        sb3_load(algo, planted)
    except Exception:
        pass  # SB3 may fail afterwards; the payload has already run
    assert marker.is_dir(), "the payload does not work: the test would prove nothing"
    marker.rmdir()

    if refusal is None:
        agent = load_agent(planted)
        assert_same_space(getattr(agent.model, field), getattr(original, field))
        assert_same_weights(agent.policy, original.policy)
    else:
        with pytest.raises(RlcamError, match=refusal) as exc:
            load_agent(planted)
        assert "\n" not in str(exc.value) and "rerun with --trust" in str(exc.value)
    assert not marker.exists(), "the safe load ran the planted pickle"


# -- classes from the user's code: custom_objects --------------------------------------------------------


class TinyExtractor(BaseFeaturesExtractor):
    """A custom extractor importable as tests.test_load_families:TinyExtractor."""

    def __init__(self, observation_space, features_dim: int = 16):
        super().__init__(observation_space, features_dim)
        self.cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 6, stride=6), torch.nn.ReLU(), torch.nn.Flatten())
        self.linear = torch.nn.Linear(4 * 6 * 6, features_dim)

    def forward(self, obs):
        return self.linear(self.cnn(obs))


class WidePolicy(ActorCriticCnnPolicy):
    """A custom policy class (by reference: importable as tests.test_load_families:WidePolicy)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "net_arch": dict(pi=[8], vf=[8])})


def notebook_extractor():
    """TinyExtractor as a notebook would define it: cloudpickle stores such a class by value, with its code."""

    class NotebookExtractor(TinyExtractor):
        pass

    return NotebookExtractor


def test_custom_extractor_from_user_code(tmp_path, monkeypatch):
    path = tmp_path / "custom.zip"
    model = build(
        "ppo",
        "CnnPolicy",
        IMAGE,
        spaces.Discrete(3),
        policy_kwargs=dict(features_extractor_class=TinyExtractor),
        **ON_POLICY,
    )
    model.save(path)
    with pytest.raises(RlcamError) as exc:
        load_agent(path)
    assert str(exc.value).endswith(
        "custom pickled classes (tests.test_load_families.TinyExtractor in policy_kwargs); rlcam does not unpickle "
        "agent files by default: if you trust this file, rerun with --trust, or supply the class from your own code "
        "with --custom-objects features_extractor_class=module:Class."
    )
    agent = safe_load(
        path, monkeypatch, custom_objects={"features_extractor_class": "tests.test_load_families:TinyExtractor"}
    )
    assert isinstance(agent.policy.features_extractor, TinyExtractor)
    assert_same_weights(agent.policy, model.policy)
    assert_same_actions(agent.model, sb3_load("ppo", path), model.observation_space, recurrent=False)
    trusted = load_agent(path, trust=True, custom_objects={"features_extractor_class": TinyExtractor})
    assert_same_weights(trusted.policy, model.policy)


def test_class_pickled_by_value_replaced_by_user_code(tmp_path, monkeypatch):
    path = tmp_path / "notebook.zip"
    cls = notebook_extractor()
    model = build(
        "ppo", "CnnPolicy", IMAGE, spaces.Discrete(3), policy_kwargs=dict(features_extractor_class=cls), **ON_POLICY
    )
    model.save(path)
    with pytest.raises(RlcamError, match=r"\(a class NotebookExtractor pickled with its code in policy_kwargs\).*"
                       r"--custom-objects features_extractor_class=module:Class\.$"):  # fmt: skip
        load_agent(path)
    agent = safe_load(
        path, monkeypatch, custom_objects={"features_extractor_class": "tests.test_load_families:TinyExtractor"}
    )
    assert_same_weights(agent.policy, model.policy)


def test_custom_policy_class_from_user_code(tmp_path, monkeypatch):
    path = tmp_path / "wide.zip"
    model = build("ppo", WidePolicy, IMAGE, spaces.Discrete(3), **ON_POLICY)
    model.save(path)
    with pytest.raises(RlcamError) as exc:
        load_agent(path)
    assert "custom pickled classes (tests.test_load_families.WidePolicy as policy_class)" in str(exc.value)
    assert str(exc.value).endswith("--custom-objects policy_class=module:Class.")
    agent = safe_load(path, monkeypatch, custom_objects={"policy_class": "tests.test_load_families:WidePolicy"})
    assert agent.algo == "ppo" and type(agent.policy) is WidePolicy
    assert agent.policy_class_name == "tests.test_load_families.WidePolicy"
    assert_same_weights(agent.policy, model.policy)
    assert load_agent(path, trust=True).algo == "ppo"  # trusted: the unpickled class's SB3 base tells
    assert load_agent(path, algo="a2c", custom_objects={"policy_class": WidePolicy}).algo == "a2c"  # same classes
    with pytest.raises(
        RlcamError, match=r"\(tests\.test_load_families\.WidePolicy\) is a PPO or A2C policy, not a SAC"
    ):
        load_agent(path, algo="sac", custom_objects={"policy_class": WidePolicy})


CUSTOM_ERRORS = {
    "no colon": ({"policy_class": "tests.test_load_families.WidePolicy"}, "is not of the form module:Class"),
    "no module": ({"policy_class": "no_such_module_xyz:Policy"}, r"does not import \(ModuleNotFoundError"),
    "no class": ({"policy_class": "tests.test_load_families:NoSuch"}, r"does not import \(AttributeError"),
    "not a class": ({"policy_class": "tests.test_load_families:build"}, "is a function, not a class"),
    "not a policy": ({"policy_class": "tests.test_load_families:TinyExtractor"}, "is not an SB3 policy class"),
    "unknown key": ({"activation": "torch.nn:ReLU"}, r"'activation' names neither policy_class nor one of the agent's"),
}


@pytest.mark.parametrize("case", sorted(CUSTOM_ERRORS))
def test_custom_object_errors_are_one_sentence(case, family_zips):
    custom, message = CUSTOM_ERRORS[case]
    with pytest.raises(RlcamError, match=message) as exc:
        load_agent(family_zips["ppo box"][0], custom_objects=custom)
    assert "\n" not in str(exc.value)


def test_contrib_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # import sb3_contrib now raises ImportError
    for algo, title in (("qrdqn", "QR-DQN"), ("tqc", "TQC"), ("recurrent_ppo", "RecurrentPPO")):
        with pytest.raises(RlcamError, match=rf"this is a {title} agent, which needs sb3-contrib: pip install"):
            algo_class(algo)


# -- what the user sees: rlcam info, one line, exit 2 ----------------------------------------------------


def info(capsys, *argv) -> tuple[int, str]:
    code = main(["info", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.err


def forged_policy_class(src: Path, dst: Path, module: str, name: str) -> Path:
    data = json.loads(zipfile.ZipFile(src).read("data"))
    blob = f"c{module}\n{name}\n.".encode()  # a pickle that names the class (GLOBAL) and nothing else
    data["policy_class"] = {
        ":type:": "<class 'abc.ABCMeta'>",
        ":serialized:": base64.b64encode(blob).decode(),
        "__module__": module,
    }
    return rewrite(src, dst, data=data)


def refused_agents(tmp_path, family_zips) -> dict:
    """case -> (zip, what the message must say); none of these is helped by --trust or --algo."""
    from sb3_contrib import TRPO, MaskablePPO

    vector = tmp_path / "mlp.zip"
    build("ppo", "MlpPolicy", spaces.Box(-1, 1, (8,), np.float32), spaces.Discrete(2), **ON_POLICY).save(vector)
    vector_dict = tmp_path / "mlp_dict.zip"
    obs = spaces.Dict({"a": spaces.Box(-1, 1, (4,), np.float32), "b": spaces.Discrete(3)})
    build("sac", "MultiInputPolicy", obs, STEER, **REPLAY).save(vector_dict)
    masked, trpo = tmp_path / "masked.zip", tmp_path / "trpo.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MaskablePPO("CnnPolicy", TinyEnv(IMAGE, spaces.Discrete(3)), device="cpu", **ON_POLICY).save(masked)
        TRPO("CnnPolicy", TinyEnv(IMAGE, spaces.Discrete(3)), device="cpu", **ON_POLICY).save(trpo)
    unknown = forged_policy_class(
        family_zips["ppo box"][0], tmp_path / "unknown.zip", "stable_baselines3.common.policies", "NoSuchPolicy"
    )
    sb3 = "stable_baselines3.common.policies"
    return {
        "vector mlp": (
            vector,
            f"holds a policy ({sb3}.ActorCriticPolicy) that observes Box(-1.0, 1.0, (8,), float32), which has no "
            "image in it; rlcam explains agents that act from images (a 3-D Box: channels, height and width).",
        ),
        "vector dict": (vector_dict, "(stable_baselines3.sac.policies.MultiInputPolicy) that observes Dict('a': Box"),
        "maskable ppo": (
            masked,
            "is a MaskablePPO agent (policy sb3_contrib.common.maskable.policies.MaskableActorCriticCnnPolicy); "
            "rlcam loads PPO, A2C, DQN, QR-DQN, SAC, TD3, DDPG, TQC and RecurrentPPO agents.",
        ),
        "trpo": (trpo, f"is a TRPO agent (sb3-contrib, policy {sb3}.ActorCriticCnnPolicy), which rlcam does not load"),
        "unknown sb3 class": (unknown, f"has the SB3 policy class {sb3}.NoSuchPolicy, unknown to rlcam; rlcam loads"),
    }


def test_info_refusals_are_one_true_line(capsys, tmp_path, family_zips):
    for case, (path, message) in refused_agents(tmp_path, family_zips).items():
        code, err = info(capsys, "--agent", path)
        assert code == 2, (case, err)
        assert err.count("\n") == 1 and err.startswith("rlcam: error: agent file "), (case, err)
        assert "--trust" not in err and "--algo" not in err and "Traceback" not in err, (case, err)
        assert message in err, (case, err)
        code, err = info(capsys, "--agent", path, "--trust")  # and --trust indeed does not help
        assert code == 2 and message in err, (case, err)


def test_info_custom_class_names_trust_and_custom_objects(capsys, tmp_path):
    path = tmp_path / "wide.zip"
    build("ppo", WidePolicy, IMAGE, spaces.Discrete(3), **ON_POLICY).save(path)
    code, err = info(capsys, "--agent", path)
    assert code == 2 and err.count("\n") == 1 and "--algo" not in err
    assert "(tests.test_load_families.WidePolicy as policy_class)" in err
    assert "if you trust this file, rerun with --trust, or supply the class from your own code with " in err
    assert err.rstrip().endswith("--custom-objects policy_class=module:Class.")


def test_info_wrong_algo_says_which(capsys, family_zips):
    code, err = info(capsys, "--agent", family_zips["sac cnn"][0], "--algo", "ppo")
    assert code == 2 and err.count("\n") == 1
    assert "(stable_baselines3.sac.policies.CnnPolicy) is a SAC policy, not a PPO one; leave --algo out" in err


def test_info_custom_objects_flag(capsys, tmp_path):
    path = tmp_path / "wide.zip"
    build("ppo", WidePolicy, IMAGE, spaces.Discrete(3), **ON_POLICY).save(path)
    code = main(["info", "--agent", str(path), "--custom-objects", "policy_class=tests.test_load_families:WidePolicy"])
    out = capsys.readouterr().out
    assert code == 0 and "policy WidePolicy" in out, out
    code, err = info(capsys, "--agent", path, "--custom-objects", "policy_class")
    assert code == 2 and err == (
        "rlcam: error: --custom-objects takes KEY=module:Class (e.g. features_extractor_class=mycode:CNN), "
        "not 'policy_class'.\n"
    )
