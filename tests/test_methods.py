"""Every map method equals an independent computation; every method leaves the model as it was and records.

References are written differently from the library: numpy loops and SVDs, explicit loops of
single forwards through SB3's own modules, ``F.interpolate`` instead of the placement matrices,
and a hand-written backward for guided backpropagation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rlcam.agents import load_agent
from rlcam.cam import (
    METHODS,
    counterfactual_cam,
    eigen_cam,
    fuse_layers,
    grad_cam,
    grad_cam_pp,
    guided_grad_cam,
    score_cam,
    xgrad_cam,
)
from rlcam.cli import main
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer
from rlcam.guided import guided_relus
from rlcam.video import load_trace
from tests.conftest import build_model

TOY = "rlcam.toyenv:FindTarget-v0"
RNG = np.random.default_rng(0)


def _up(maps: torch.Tensor, size: int = 84) -> torch.Tensor:
    """``(N, h, w) -> (N, size, size)`` with torch's own bilinear upsampling (the paper's placement)."""
    return F.interpolate(maps[:, None].double(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def _parts(agent):
    """(NatureCNN extractor, output layer) of a PPO or DQN agent."""
    if agent.algo == "ppo":
        return agent.policy.features_extractor, agent.policy.action_net
    return agent.policy.q_net.features_extractor, agent.policy.q_net.q_net[0]


def _reference_acts(agent, obs, upto: int = 6) -> torch.Tensor:
    extractor, _ = _parts(agent)
    with torch.no_grad():
        return extractor.cnn[:upto](torch.as_tensor(obs).float() / 255.0)


def _outputs(agent, inputs: torch.Tensor) -> torch.Tensor:
    """Logits (PPO) or Q-values (DQN) through SB3's own modules, ``inputs`` in observation units."""
    with torch.no_grad():
        if agent.algo == "ppo":  # raw logits: SB3's Categorical would hand back log-probabilities
            policy = agent.policy
            return policy.action_net(policy.mlp_extractor.forward_actor(policy.extract_features(inputs)))
        return agent.policy.q_net(inputs)


# -- formulas on small tensors, against numpy ---------------------------------------------------------

ACTS = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, 0.0]]]])  # (1, 2, 2, 2)
GRADS = torch.tensor([[[[3.0, -1.0], [1.0, -1.0]], [[-2.0, 3.0], [0.0, -5.0]]]])


def test_counterfactual_by_hand():
    # alpha of -G = (-0.5, 1): -0.5*A0 + A1 = [[0.5, 1], [1, -1]] -> ReLU
    expected = torch.tensor([[[0.5, 1.0], [1.0, 0.0]]])
    assert torch.equal(counterfactual_cam(ACTS, GRADS), expected)
    assert torch.equal(counterfactual_cam(ACTS, GRADS), grad_cam(ACTS, -GRADS))


def test_grad_cam_pp_from_the_derivatives_of_exp_score():
    acts = np.abs(RNG.normal(size=(2, 3, 4, 5)))
    grads = RNG.normal(size=(2, 3, 4, 5))
    grads[0, 0, 0, 0] = 0.0  # a zero gradient: alpha must be 0 there, not 0/0
    score = 0.7
    # Y = exp(S); for a piecewise-linear head dY = e^S g, d2Y = e^S g^2, d3Y = e^S g^3.
    d1, d2, d3 = np.exp(score) * grads, np.exp(score) * grads**2, np.exp(score) * grads**3
    expected = np.zeros((2, 4, 5))
    for n in range(2):
        for k in range(3):
            weight = 0.0
            for i in range(4):
                for j in range(5):
                    denom = 2 * d2[n, k, i, j] + acts[n, k].sum() * d3[n, k, i, j]
                    alpha = d2[n, k, i, j] / denom if denom != 0 else 0.0
                    weight += alpha * max(d1[n, k, i, j], 0.0)
            expected[n] += weight * acts[n, k]
    expected = np.maximum(expected, 0) / np.exp(score)  # the common factor e^S does not change the map's shape
    got = grad_cam_pp(torch.tensor(acts), torch.tensor(grads)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert expected.max() > 0


def test_xgrad_cam_by_loops():
    acts = np.abs(RNG.normal(size=(2, 3, 4, 4)))
    acts[1, 2] = 0.0  # a dead channel: weight 0
    grads = RNG.normal(size=(2, 3, 4, 4))
    expected = np.zeros((2, 4, 4))
    for n in range(2):
        for k in range(3):
            total = acts[n, k].sum()
            weight = (
                sum(acts[n, k, i, j] / total * grads[n, k, i, j] for i in range(4) for j in range(4)) if total else 0
            )
            expected[n] += weight * acts[n, k]
    got = xgrad_cam(torch.tensor(acts), torch.tensor(grads)).numpy()
    np.testing.assert_allclose(got, np.maximum(expected, 0), rtol=1e-10)


def test_eigen_cam_is_the_first_principal_component():
    acts = np.abs(RNG.normal(size=(3, 5, 4, 6)))
    acts[:, :2] *= np.linspace(0, 3, 24).reshape(4, 6)  # a dominant spatial pattern
    got = eigen_cam(torch.tensor(acts)).numpy()
    for n in range(3):
        cells = acts[n].reshape(5, -1).T  # (hw, K)
        centred = cells - cells.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        projection = centred @ vt[0]
        energy = cells.sum(axis=1)
        if np.corrcoef(projection, energy)[0, 1] < 0:
            projection = -projection
        np.testing.assert_allclose(got[n], np.maximum(projection, 0).reshape(4, 6), rtol=1e-8, atol=1e-12)
    assert np.corrcoef(got[0].ravel(), acts[0].sum(0).ravel())[0, 1] > 0


def test_score_cam_weights_are_a_softmax_over_channels():
    scores = torch.tensor([[0.0, np.log(3.0)]])  # softmax -> (0.25, 0.75)
    expected = torch.relu(0.25 * ACTS[0, 0] + 0.75 * ACTS[0, 1])[None]
    torch.testing.assert_close(score_cam(ACTS, scores), expected)


def test_guided_grad_cam_and_frame_shares_by_hand():
    grads = torch.tensor([[[[1.0, -2.0]], [[0.0, 3.0]]]])  # (1, C=2, 1, 2)
    cam = torch.tensor([[[2.0, 1.0]]])
    got, shares = guided_grad_cam(grads, cam)
    # |g| * cam per channel: [[2, 2]] and [[0, 3]]
    assert torch.equal(got, torch.tensor([[[2.0, 5.0]]]))
    torch.testing.assert_close(shares, torch.tensor([[4 / 7, 3 / 7]]))
    _, none = guided_grad_cam(grads, torch.zeros_like(cam))
    assert torch.equal(none, torch.zeros(1, 2))


def test_fuse_layers_is_the_geometric_mean():
    got = fuse_layers([torch.tensor([[[4.0, 1.0, 9.0]]]), torch.tensor([[[1.0, 0.0, 4.0]]])])
    torch.testing.assert_close(got, torch.tensor([[[2.0, 0.0, 6.0]]]))


# -- guided backpropagation against a hand-written backward --------------------------------------------


def manual_guided_backward(layers: list[nn.Module], x: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    """d(coeff . out)/dx through Conv2d/ReLU/Flatten/Linear, ReLU gradients kept only where the
    forward input and the incoming gradient are both positive. No autograd."""
    with torch.no_grad():
        inputs = []
        h = x
        for layer in layers:
            inputs.append(h)
            h = layer(h)
        g = coeff.expand_as(h).clone()
        for layer, inp in zip(reversed(layers), reversed(inputs), strict=True):
            if isinstance(layer, nn.Linear):
                g = g @ layer.weight
            elif isinstance(layer, nn.ReLU):
                g = g * (inp > 0) * (g > 0)
            elif isinstance(layer, nn.Flatten):
                g = g.reshape(inp.shape)
            elif isinstance(layer, nn.Conv2d):
                g = torch.nn.grad.conv2d_input(inp.shape, layer.weight, g, stride=layer.stride, padding=layer.padding)
            else:
                raise TypeError(type(layer))
    return g


def test_guided_backprop_equals_the_manual_backward_and_leaves_no_hook():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2), nn.ReLU(), nn.Conv2d(3, 4, 2), nn.ReLU(), nn.Flatten(), nn.Linear(36, 5)
    )
    net.append(nn.ReLU())
    net.append(nn.Linear(5, 3))
    x = torch.randn(2, 2, 9, 9)
    coeff = torch.tensor([0.0, 1.0, 0.0])
    expected = manual_guided_backward(list(net), x, coeff)
    xg = x.clone().requires_grad_(True)
    with guided_relus(net) as count:
        assert count == 3
        (got,) = torch.autograd.grad((net(xg) @ coeff).sum(), xg)
    torch.testing.assert_close(got, expected)
    (plain,) = torch.autograd.grad((net(xg) @ coeff).sum(), xg)
    assert not torch.allclose(plain, expected), "guided and plain gradients agree: the test proves nothing"
    assert not any(m._forward_hooks for m in net.modules())
    with pytest.raises(ZeroDivisionError), guided_relus(net):
        raise ZeroDivisionError
    assert not any(m._forward_hooks for m in net.modules())


def test_guided_grad_cam_through_the_explainer(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["ppo"])
    obs = breakout_obs[:3]
    with Explainer(agent, method="guided") as ex:
        got = ex.explain(obs)
    with Explainer(agent, method="gradcam") as ex:
        plain = ex.explain(obs)
    extractor, head = _parts(agent)
    layers = [*extractor.cnn, *extractor.linear, head]
    x = torch.as_tensor(obs).float() / 255.0
    guided = torch.stack(
        [
            manual_guided_backward(layers, x[i : i + 1], F.one_hot(torch.tensor(a), 4).float())[0]
            for i, a in enumerate(got.actions)
        ]
    ).double()
    up = _up(torch.as_tensor(plain.cam))
    expected = (guided.abs() * up[:, None]).sum(1)
    assert expected.max() > 0
    np.testing.assert_allclose(got.cam, expected.numpy(), rtol=1e-4, atol=1e-6 * expected.max().item())
    np.testing.assert_allclose(got.cam_input, got.cam, rtol=1e-6, atol=1e-9 * expected.max().item())
    shares = (guided.abs() * up[:, None]).sum((2, 3))
    np.testing.assert_allclose(got.frame_shares, (shares / shares.sum(1, keepdim=True)).numpy(), rtol=1e-4)
    assert got.frame_shares.shape == (3, 4) and plain.frame_shares.shape == (3, 0)


# -- multi-pass methods against explicit loops of single forwards --------------------------------------


def test_score_cam_equals_a_loop_of_masked_forwards(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["ppo"])
    obs = breakout_obs[:2]
    with Explainer(agent, method="scorecam") as ex:
        got = ex.explain(obs)
    acts = _reference_acts(agent, obs)
    expected = np.zeros((2, 7, 7))
    for n in range(2):
        scores = []
        for k in range(acts.shape[1]):
            up = _up(acts[n, k][None])[0]
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
            masked = torch.as_tensor(obs[n]).double() * mask
            scores.append(_outputs(agent, masked[None].float())[0, got.actions[n]].item())
        weights = np.exp(scores - np.max(scores))
        weights /= weights.sum()
        expected[n] = np.maximum(np.tensordot(weights, acts[n].double().numpy(), axes=1), 0)
    assert expected.max() > 0
    np.testing.assert_allclose(got.cam, expected, rtol=1e-3, atol=1e-4 * expected.max())


def _reference_blur(x: torch.Tensor, sigma: float = 3.0) -> torch.Tensor:
    """2-D convolution with a truncated Gaussian (4 sigma), renormalised where it leaves the image."""
    radius = int(4 * sigma)
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k1 = torch.exp(-(d**2) / (2 * sigma**2))
    kernel = (k1[:, None] * k1[None, :])[None, None]
    flat = x.reshape(-1, 1, *x.shape[-2:]).double()
    blurred = F.conv2d(flat, kernel, padding=radius) / F.conv2d(torch.ones_like(flat[:1]), kernel, padding=radius)
    return blurred.reshape(x.shape)


def test_perturbation_equals_a_loop_of_single_forwards(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["ppo"])
    obs = breakout_obs[:2]  # 2 x 289 perturbed inputs: the batched version crosses chunk boundaries
    with Explainer(agent, method="perturbation") as ex:
        got = ex.explain(obs)
    centres = 1.5 + 5 * np.arange(17)  # (84 - 1 - 80) / 2 = 1.5: the grid is centred
    yy, xx = np.mgrid[0:84, 0:84]
    expected = np.zeros((2, 17, 17))
    for n in range(2):
        x = torch.as_tensor(obs[n]).double()
        blurred = _reference_blur(x)
        base = _outputs(agent, x[None].float())[0]
        for i, cy in enumerate(centres):
            for j, cx in enumerate(centres):
                mask = torch.as_tensor(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 5.0**2)))
                perturbed = x * (1 - mask) + blurred * mask
                out = _outputs(agent, perturbed[None].float())[0]
                expected[n, i, j] = 0.5 * ((out - base) ** 2).sum().item()
    assert got.cam.shape == (2, 17, 17) and expected.max() > 0
    np.testing.assert_allclose(got.cam, expected, rtol=2e-2, atol=2e-3 * expected.max())
    # placed at the probe centres (1.5 + 5i): pixel 6 lies 0.9 of the way from probe 0 to probe 1 on each
    # axis; pixels before the first centre take its value
    corner = got.cam[:, :2, :2]
    weights = np.outer([0.1, 0.9], [0.1, 0.9])
    np.testing.assert_allclose(got.cam_input[:, 6, 6], (corner * weights).sum((1, 2)), rtol=1e-4)
    np.testing.assert_allclose(got.cam_input[:, 0, 0], got.cam[:, 0, 0], rtol=1e-5)


def test_fine_mode_is_the_geometric_mean_of_layercams(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["ppo"])
    obs = breakout_obs[:3]
    with Explainer(agent, method="fine") as ex:
        got = ex.explain(obs)
        assert ex.layers == ["features_extractor.cnn.1", "features_extractor.cnn.3", "features_extractor.cnn.5"]
    extractor, head = _parts(agent)
    x = (torch.as_tensor(obs).float() / 255.0).requires_grad_(True)
    a1 = extractor.cnn[:2](x)
    a2 = extractor.cnn[2:4](a1)
    a3 = extractor.cnn[4:6](a2)
    logits = head(extractor.linear(extractor.cnn[6:](a3)))
    score = logits[torch.arange(3), torch.as_tensor(got.actions)]
    grads = torch.autograd.grad(score.sum(), [x, a1, a2, a3])
    layer_cams = [torch.relu((torch.relu(g) * a).sum(1)).detach() for a, g in zip([x, a1, a2, a3], grads, strict=True)]
    maps = [layer_cams[0].double()] + [_up(m) for m in layer_cams[1:]]
    expected = (maps[0] * maps[1] * maps[2] * maps[3]) ** (1 / 4)
    assert expected.max() > 0
    np.testing.assert_allclose(got.cam, expected.numpy(), rtol=1e-3, atol=1e-5 * expected.max().item())
    assert not any(p.grad is not None for p in agent.policy.parameters())


def test_eigen_cam_through_the_explainer(agent_zips, breakout_obs):
    agent = load_agent(agent_zips["dqn"])
    with Explainer(agent, method="eigencam") as ex:
        got = ex.explain(breakout_obs[:2])
    expected = eigen_cam(_reference_acts(agent, breakout_obs[:2]).double()).numpy()
    np.testing.assert_allclose(got.cam, expected, rtol=1e-4, atol=1e-6 * expected.max())


# -- contrastive targets -----------------------------------------------------------------------------


@pytest.mark.parametrize("algo,fast", [("ppo", True), ("ppo", False), ("dqn", True), ("dqn", False)])
def test_contrast_is_grad_cam_of_a_score_difference(agent_zips, breakout_obs, algo, fast):
    agent = load_agent(agent_zips[algo])
    chosen = _outputs(agent, torch.as_tensor(breakout_obs).float()).argmax(1)
    other = int(np.argmin(np.bincount(chosen.numpy(), minlength=4)))  # rarely chosen: the contrast is not 0
    with Explainer(agent, target=f"contrast:{other}", fast=fast) as ex:
        got = ex.explain(breakout_obs)
    extractor, head = _parts(agent)
    acts = _reference_acts(agent, breakout_obs).requires_grad_(True)
    out = head(extractor.linear(extractor.cnn[6:](acts)))
    np.testing.assert_array_equal(got.actions, chosen.numpy())
    diff = out[torch.arange(len(chosen)), chosen] - out[:, other]
    (grads,) = torch.autograd.grad(diff.sum(), acts)
    alpha = grads.double().mean((2, 3)).numpy()
    expected = np.maximum(np.einsum("nk,nkhw->nhw", alpha, acts.detach().double().numpy()), 0)
    np.testing.assert_allclose(got.score, diff.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert expected.max() > 0
    np.testing.assert_allclose(got.cam, expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_contrast_by_name_and_bad_contrasts(agent_zips):
    agent = load_agent(agent_zips["ppo"])
    names = ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert Explainer(agent, target="contrast:left", action_names=names).target == "contrast:3"
    with pytest.raises(RlcamError, match="give its index"):
        Explainer(agent, target="contrast:LEFT")
    with pytest.raises(RlcamError, match="no action named 'UP'"):
        Explainer(agent, target="contrast:UP", action_names=names)
    with pytest.raises(RlcamError, match=r"\[0, 4\)"):
        Explainer(agent, target="contrast:4")


# -- every method: the model untouched, hooks gone, batches independent --------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_leaves_the_model_as_it_was(agent_zips, breakout_obs, method):
    agent = load_agent(agent_zips["ppo"])
    policy = agent.policy
    policy.train(True)
    params = list(policy.parameters())
    params[-1].grad = torch.full_like(params[-1], 7.0)
    before = [None if p.grad is None else p.grad.clone() for p in params]
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    with Explainer(agent, method=method) as ex:
        got = ex.explain(breakout_obs[:2])
        assert sum(len(m._forward_hooks) for m in policy.modules()) == len(ex.layers)
    assert np.isfinite(got.cam).all() and (got.cam >= 0).all() and got.cam_input.shape == (2, 84, 84)
    assert all(m.training for m in policy.modules())
    assert not any(m._forward_hooks or m._backward_hooks for m in policy.modules())
    assert all(torch.equal(state[k], v) for k, v in policy.state_dict().items())
    for p, g in zip(params, before, strict=True):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("method", ["scorecam", "guided", "fine"])
def test_multi_pass_batches_equal_one_at_a_time(agent_zips, breakout_obs, method):
    agent = load_agent(agent_zips["ppo"])
    obs = breakout_obs[:5]
    with Explainer(agent, method=method) as ex:
        batch = ex.explain(obs)
        singles = np.concatenate([ex.explain(o).cam for o in obs])
    np.testing.assert_allclose(batch.cam, singles, rtol=1e-3, atol=1e-6 * singles.max())


# -- every method records, on Breakout and on a non-Atari image env ------------------------------------


@pytest.fixture(scope="module")
def toy_agent(tmp_path_factory):
    from rlcam.envs import make_env

    venv, _ = make_env(TOY)
    path = tmp_path_factory.mktemp("toy") / "toy_ppo.zip"
    build_model("ppo", venv).save(path)
    venv.close()
    return path


@pytest.mark.parametrize("env", ["Breakout", TOY])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_records(agent_zips, toy_agent, tmp_path, capsys, env, method):
    agent = agent_zips["dqn"] if env == "Breakout" else toy_agent
    out = tmp_path / "clip.mp4"
    code = main(["record", "--env", env, "--agent", str(agent), "--steps", "2", "--method", method, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    trace = load_trace(out.with_suffix(".npz"))
    assert trace.meta["method"] == method and trace.meta["layer"].endswith("cnn.5")
    assert trace["cam_input"].shape == (2, 84, 84) and np.isfinite(trace["cam"]).all()
    on_input = ("guided", "fine", "rise", "ig")
    resolution = (17, 17) if method == "perturbation" else (84, 84) if method in on_input else (7, 7)
    assert trace["cam"].shape[1:] == resolution


@pytest.mark.parametrize("env", ["Breakout", TOY])
def test_contrast_records(agent_zips, toy_agent, tmp_path, capsys, env):
    agent = agent_zips["ppo"] if env == "Breakout" else toy_agent
    out = tmp_path / "contrast.mp4"
    argv = ["record", "--env", env, "--agent", str(agent), "--steps", "2", "--target", "contrast:1", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert load_trace(out.with_suffix(".npz")).meta["target"] == "contrast:1"
