"""Loading agents: the safe path never unpickles, and rebuilds exactly what SB3's own load gives."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from rlcam.agents import algo_class, load_agent
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer
from rlcam.safeload import Call, Global, read_pickle
from tests.conftest import ALGOS, build_model


class Plant:
    """Unpickling this creates the directory ``marker``: proof that a file's pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


class TinyCNN(BaseFeaturesExtractor):
    """A custom extractor: only SB3's unpickling can rebuild a policy that uses it."""

    def __init__(self, observation_space, features_dim: int = 32):
        super().__init__(observation_space, features_dim)
        self.cnn = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 8, stride=8), torch.nn.ReLU(), torch.nn.Flatten())
        self.linear = torch.nn.Linear(8 * 10 * 10, features_dim)

    def forward(self, obs):
        return self.linear(self.cnn(obs))


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


def agent_data(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("data"))


def policy_pth(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return torch.load(io.BytesIO(archive.read("policy.pth")), weights_only=True)


def tensor_file(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def explain(agent, obs):
    with Explainer(agent) as explainer:
        return explainer.explain(obs)


def assert_same_agent(safe, trusted, obs):
    """Same weights, spaces, modes, fields, and identical actions and maps."""
    a, b = safe.policy.state_dict(), trusted.policy.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert type(safe.policy) is type(trusted.policy)
    assert safe.model.observation_space == trusted.model.observation_space
    assert safe.model.action_space == trusted.model.action_space
    assert safe.model.policy_kwargs == trusted.model.policy_kwargs
    saved = [agent.policy._get_constructor_parameters() for agent in (safe, trusted)]  # what a re-save records
    assert {**saved[0], "lr_schedule": None} == {**saved[1], "lr_schedule": None}
    assert safe.model.num_timesteps == trusted.model.num_timesteps
    assert getattr(safe.model, "exploration_rate", None) == getattr(trusted.model, "exploration_rate", None)
    assert [m.training for m in safe.policy.modules()] == [m.training for m in trusted.policy.modules()]
    got, expected = explain(safe, obs), explain(trusted, obs)
    assert expected.cam.max() > 0, "all-zero maps would prove nothing"
    for field in ("actions", "cam", "cam_input", "score", "action_values", "value"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=field)


def assert_names_trust(exc: pytest.ExceptionInfo, key: str | None = None):
    """One line that offers --trust and, where a class of the user's code could stand in, --custom-objects."""
    message = str(exc.value)
    assert "\n" not in message and "if you trust this file, rerun with --trust" in message, message
    advice = f"--custom-objects {key}=module:Class" in message
    assert advice if key else "--custom-objects" not in message, message


# -- the safe load equals SB3's own ----------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
def test_safe_load_equals_trusted_load(agent_zips, breakout_obs, algo, monkeypatch):
    trusted = load_agent(agent_zips[algo], trust=True)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the safe load unpickled something")

    for module, name in ((pickle, "loads"), (pickle, "load"), (cloudpickle, "loads"), (cloudpickle, "load")):
        monkeypatch.setattr(module, name, no_unpickling)
    safe = load_agent(agent_zips[algo])
    monkeypatch.undo()
    assert safe.algo == trusted.algo == algo
    assert isinstance(safe.model, algo_class(algo))
    assert_same_agent(safe, trusted, breakout_obs)
    predicted, _ = safe.model.predict(breakout_obs, deterministic=True)
    np.testing.assert_array_equal(predicted, trusted.model.predict(breakout_obs, deterministic=True)[0])


WHITELISTED_KWARGS = {
    "ppo tanh": ("ppo", dict(net_arch=[64], activation_fn=torch.nn.Tanh, normalize_images=True)),
    "ppo plain json": ("ppo", dict(net_arch=[32, 32])),  # JSON-serialisable: SB3 writes no pickle at all
    "a2c split": (
        "a2c",
        dict(
            net_arch=dict(pi=[32], vf=[16]),
            ortho_init=False,
            share_features_extractor=False,
            features_extractor_kwargs=dict(features_dim=128),
        ),
    ),
    "dqn rmsprop": ("dqn", dict(net_arch=[64], optimizer_class=torch.optim.RMSprop, optimizer_kwargs=dict(eps=1e-5))),
    "qrdqn elu": ("qrdqn", dict(n_quantiles=8, net_arch=[32], activation_fn=torch.nn.ELU)),
}


@pytest.mark.parametrize("case", sorted(WHITELISTED_KWARGS))
def test_whitelisted_kwargs_load_safely(case, breakout_env, breakout_obs, tmp_path):
    algo, kwargs = WHITELISTED_KWARGS[case]
    path = tmp_path / "agent.zip"
    build_model(algo, breakout_env, seed=1, policy_kwargs=copy.deepcopy(kwargs)).save(path)
    assert (":serialized:" in agent_data(path)["policy_kwargs"]) == (case != "ppo plain json")
    safe = load_agent(path)
    assert_same_agent(safe, load_agent(path, trust=True), breakout_obs)
    assert {k: safe.model.policy_kwargs[k] for k in kwargs} == kwargs


def test_custom_extractor_needs_trust(breakout_env, breakout_obs, tmp_path):
    path = tmp_path / "custom.zip"
    model = build_model("ppo", breakout_env, policy_kwargs=dict(features_extractor_class=TinyCNN))
    model.save(path)
    with pytest.raises(
        RlcamError, match=r"custom pickled classes \(tests\.test_agents\.TinyCNN in policy_kwargs\)"
    ) as exc:
        load_agent(path)
    assert_names_trust(exc, key="features_extractor_class")
    agent = load_agent(path, trust=True)
    assert isinstance(agent.policy.features_extractor, TinyCNN)
    for key, value in model.policy.state_dict().items():
        assert torch.equal(agent.policy.state_dict()[key], value), key
    assert explain(agent, breakout_obs).cam.shape == (len(breakout_obs), 10, 10)


def test_other_algorithms_policy_is_refused(agent_zips):
    with pytest.raises(RlcamError, match=r"ActorCriticCnnPolicy\) is a PPO or A2C policy, not a DQN one; leave --algo"):
        load_agent(agent_zips["ppo"], algo="dqn")


# -- a planted pickle never runs -------------------------------------------------------------------------


PLANTS = {  # where the payload goes -> whether the safe load still succeeds (it never reads that blob)
    "lr_schedule": True,
    "observation_space": True,  # bounds then come from the JSON repr beside the blob
    "action_space": True,
    "policy_class": False,
    "policy_kwargs": False,
}


@pytest.mark.parametrize("field", sorted(PLANTS))
def test_planted_pickle_never_runs(field, agent_zips, breakout_obs, tmp_path):
    from stable_baselines3 import PPO

    marker = tmp_path / "pwned"
    data = agent_data(agent_zips["ppo"])
    blob = base64.b64encode(pickle.dumps(Plant(marker))).decode()
    data[field] = {**data[field], ":serialized:": blob} if data[field] else {":serialized:": blob}
    path = rewrite(agent_zips["ppo"], tmp_path / "planted.zip", data=data)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            PPO.load(path, device="cpu")
        except Exception:
            pass  # SB3 may fail afterwards; the payload has already run
    assert marker.is_dir(), "the payload does not work: the test would prove nothing"
    marker.rmdir()

    if PLANTS[field]:
        agent = load_agent(path)
        assert_same_agent(agent, load_agent(agent_zips["ppo"]), breakout_obs)
    else:
        with pytest.raises(RlcamError, match=rf"\(posix\.mkdir .*{field}\)") as exc:
            load_agent(path)
        assert_names_trust(exc, key="policy_class" if field == "policy_class" else None)
    assert not marker.exists(), "the safe load ran the planted pickle"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_planted_pickle_in_weights_never_runs(agent_zips, tmp_path):
    marker = tmp_path / "pwned"
    path = rewrite(agent_zips["ppo"], tmp_path / "planted.zip", policy_pth=pickle.dumps(Plant(marker)))
    with pytest.raises(RlcamError, match=r"policy\.pth in .* is not a plain tensor file"):
        load_agent(path)
    assert not marker.exists()


def test_read_pickle_equals_pickle_on_plain_data(tmp_path):
    shared = [1, 2]
    value = {
        "a": [1, -2, 3.5, None, True, False],
        "b": ("x", (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)),
        "c": {},
        "d": 2**70,
    }
    value["e"] = [shared, shared, "é" * 300]
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert read_pickle(pickle.dumps(value, protocol=protocol)) == value
        # Protocol 2 has no bytes opcode: it pickles bytes as a call, which stays an inert node.
        assert read_pickle(pickle.dumps(b"\x00\x01", protocol=protocol)) == (
            b"\x00\x01" if protocol >= 3 else Call(Global("_codecs", "encode"), ("\x00\x01", "latin1"))
        )
    assert read_pickle(pickle.dumps(torch.nn.Tanh)) == Global("torch.nn.modules.activation", "Tanh")
    node = read_pickle(pickle.dumps(Plant(tmp_path / "m")))
    assert node == Call(Global("posix", "mkdir"), (str(tmp_path / "m"),))
    assert not (tmp_path / "m").exists()


FORGED = {  # a field of a PPO zip's data, rewritten -> what the refusal says (and whether --trust could help)
    "huge shape": (lambda d: d["observation_space"].update(_shape=[100000, 100000, 4]), "too large to rebuild"),
    "dict space": (
        lambda d: d["observation_space"].update({":type:": "<class 'gymnasium.spaces.dict.Dict'>"}),
        "a Dict obs",
    ),
    "action n": (lambda d: d["action_space"].update(n="four"), "without a readable n"),
    "not base64": (
        lambda d: d["policy_class"].update({":serialized:": "!not base64!"}),
        "unreadable pickled policy_class",
    ),
    "unknown kwarg": (lambda d: d.update(policy_kwargs={"no_such_kwarg": 1}), "policy_kwargs SB3 does not accept"),
}
NO_TRUST = {"unknown kwarg"}  # SB3's own load fails on it too: --trust cannot help


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_fields_are_refused_in_one_sentence(case, agent_zips, tmp_path):
    forge, message = FORGED[case]
    data = agent_data(agent_zips["ppo"])
    forge(data)
    with pytest.raises(RlcamError, match=message) as exc:
        load_agent(rewrite(agent_zips["ppo"], tmp_path / "forged.zip", data=data))
    if case in NO_TRUST:
        assert "\n" not in str(exc.value) and "--trust" not in str(exc.value), exc.value
    else:
        assert_names_trust(exc)


# -- weights that do not fit -----------------------------------------------------------------------------


def test_missing_weights(agent_zips, tmp_path):
    path = rewrite(agent_zips["ppo"], tmp_path / "a.zip", policy_pth=None)
    for trust in (False, True):
        with pytest.raises(RlcamError, match="lacks policy.pth"):
            load_agent(path, trust=trust)


@pytest.mark.filterwarnings("ignore:You are probably loading")
def test_weights_of_another_agent(agent_zips, tmp_path):
    dqn_weights = zipfile.ZipFile(agent_zips["dqn"]).read("policy.pth")
    path = rewrite(agent_zips["ppo"], tmp_path / "a.zip", policy_pth=dqn_weights)
    # SB3 itself loads this PPO non-strictly (its SB3 < 1.7 fallback), leaving untrained weights.
    for trust in (False, True):
        with pytest.raises(
            RlcamError,
            match=r"does not fit the ActorCriticCnnPolicy .*\(tensors: \d+ missing, e\.g\. .*; \d+ unexpected, e\.g\. ",
        ):
            load_agent(path, trust=trust)


def test_weights_of_wrong_shape(agent_zips, tmp_path):
    state = policy_pth(agent_zips["ppo"])
    state["action_net.weight"] = torch.zeros(5, 512)
    path = rewrite(agent_zips["ppo"], tmp_path / "a.zip", policy_pth=tensor_file(state))
    with pytest.raises(RlcamError, match=r"action_net\.weight has shape \(5, 512\) where the policy has \(4, 512\)"):
        load_agent(path)
    with pytest.raises(RlcamError, match="size mismatch for action_net.weight"):
        load_agent(path, trust=True)


@pytest.mark.parametrize("algo", ["ppo", "qrdqn"])
def test_non_finite_weights_named(agent_zips, tmp_path, algo):
    state = policy_pth(agent_zips[algo])
    bad = list(state)[3]
    state[bad] = state[bad].clone()
    state[bad].view(-1)[7] = float("nan")
    state[list(state)[-1]] = torch.full_like(state[list(state)[-1]], float("inf"))
    path = rewrite(agent_zips[algo], tmp_path / "a.zip", policy_pth=tensor_file(state))
    for trust in (False, True):
        with pytest.raises(RlcamError, match=rf"non-finite weights \(NaN or inf\), first in {bad};"):
            load_agent(path, trust=trust)


@pytest.mark.parametrize("trust", [False, True])
def test_file_checks_in_both_paths(agent_zips, tmp_path, trust):
    (tmp_path / "text.zip").write_bytes(b"hello")
    half = agent_zips["ppo"].read_bytes()
    (tmp_path / "half.zip").write_bytes(half[: len(half) // 2])
    cases = {tmp_path / "nope.zip": "does not exist", tmp_path: "directory", tmp_path / "text.zip": "not a zip"}
    cases[tmp_path / "half.zip"] = "zip"
    for path, message in cases.items():
        with pytest.raises(RlcamError, match=message):
            load_agent(path, trust=trust)
