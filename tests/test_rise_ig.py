"""RISE and Integrated Gradients equal independent computations, and leave the model as it was.

References are written differently from the library: RISE's masks are redrawn here from the same
seed and upsampled by a numpy bilinear written out by hand (the library calls ``F.interpolate``),
and scored by single forwards through SB3's own modules; Integrated Gradients is a loop over the
path's points, each one forward and backward through SB3's modules, with the trapezoid weights
written out.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from rlcam import explainer as explainer_module
from rlcam import ig, rise
from rlcam.agents import load_agent
from rlcam.api import as_agent
from rlcam.cam import METHODS
from rlcam.cli import main
from rlcam.errors import RlcamError
from rlcam.explainer import Explainer
from rlcam.video import load_trace

MASKS = 24  # masks in the tests (the default 500 costs 500 forwards per observation)


def _bilinear(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize ``(h, w)`` to ``(out_h, out_w)``: half-pixel centres, edges clamped; loops, float64."""
    h, w = grid.shape
    out = np.empty((out_h, out_w))
    for i in range(out_h):
        sy = max((i + 0.5) * h / out_h - 0.5, 0.0)
        y0 = min(int(math.floor(sy)), h - 1)
        y1, ly = min(y0 + 1, h - 1), sy - y0
        for j in range(out_w):
            sx = max((j + 0.5) * w / out_w - 0.5, 0.0)
            x0 = min(int(math.floor(sx)), w - 1)
            x1, lx = min(x0 + 1, w - 1), sx - x0
            top = (1 - lx) * grid[y0, x0] + lx * grid[y0, x1]
            bottom = (1 - lx) * grid[y1, x0] + lx * grid[y1, x1]
            out[i, j] = (1 - ly) * top + ly * bottom
    return out


def reference_masks(height: int, width: int, count: int, cells: int, keep: float, seed: int) -> np.ndarray:
    """RISE's masks from the same draws as the library (grids, row shifts, column shifts, in that order)."""
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand(count, cells, cells, generator=generator) < keep).double().numpy()
    cell_h, cell_w = -(-height // cells), -(-width // cells)
    dy = torch.randint(0, cell_h, (count,), generator=generator).numpy()
    dx = torch.randint(0, cell_w, (count,), generator=generator).numpy()
    masks = np.empty((count, height, width))
    for i in range(count):
        up = _bilinear(grids[i], (cells + 1) * cell_h, (cells + 1) * cell_w)
        masks[i] = up[dy[i] : dy[i] + height, dx[i] : dx[i] + width]
    return masks


def _logit_or_q(agent, inputs: torch.Tensor) -> torch.Tensor:
    """Raw logits (PPO) or Q-values (DQN) through SB3's own modules; ``inputs`` in observation units."""
    policy = agent.policy
    if agent.algo == "ppo":
        return policy.action_net(policy.mlp_extractor.forward_actor(policy.extract_features(inputs)))
    return policy.q_net(inputs)


# -- RISE ---------------------------------------------------------------------------------------------


def test_rise_masks_equal_a_hand_written_upsampling():
    got = rise.rise_masks(21, 17, count=6, cells=4, keep=0.5, seed=5)
    expected = reference_masks(21, 17, count=6, cells=4, keep=0.5, seed=5)
    assert got.shape == (6, 21, 17) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1 and 0 < expected.mean() < 1
    assert torch.equal(got, rise.rise_masks(21, 17, count=6, cells=4, keep=0.5, seed=5))
    assert not torch.equal(got, rise.rise_masks(21, 17, count=6, cells=4, keep=0.5, seed=6))


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_rise_equals_a_loop_of_masked_forwards(agent_zips, breakout_obs, monkeypatch, algo):
    monkeypatch.setattr(rise, "MASKS", MASKS)
    monkeypatch.setattr(explainer_module, "CHUNK", 7)  # 2 x 24 masked inputs cross chunk boundaries
    agent = load_agent(agent_zips[algo])
    obs = breakout_obs[:2]
    with Explainer(agent, method="rise", seed=3) as ex:
        got = ex.explain(obs)
    masks = reference_masks(84, 84, MASKS, rise.CELLS, rise.KEEP, seed=3)
    expected = np.zeros((2, 84, 84))
    for n in range(2):
        x = torch.as_tensor(obs[n]).double()
        with torch.no_grad():
            scores = np.array(
                [
                    _logit_or_q(agent, (x * torch.as_tensor(mask))[None].float())[0, got.actions[n]].item()
                    for mask in masks
                ]
            )
        weighted = sum((s - scores.mean()) * mask for s, mask in zip(scores, masks, strict=True))
        expected[n] = np.maximum(weighted / (MASKS * rise.KEEP), 0)
    assert expected.max() > 0 and (expected == 0).any(), "the map should have both signs before the ReLU"
    np.testing.assert_allclose(got.cam, expected, rtol=1e-4, atol=1e-5 * expected.max())
    np.testing.assert_array_equal(got.cam_input, got.cam)  # already on the input grid
    assert (got.cam >= 0).all()


def test_rise_batches_equal_one_at_a_time_and_the_seed_draws_the_masks(agent_zips, breakout_obs, monkeypatch):
    monkeypatch.setattr(rise, "MASKS", MASKS)
    agent = load_agent(agent_zips["ppo"])
    obs = breakout_obs[:3]
    with Explainer(agent, method="rise", seed=1) as ex:
        batch = ex.explain(obs).cam
        singles = np.concatenate([ex.explain(o).cam for o in obs])
    with Explainer(agent, method="rise", seed=2) as ex:
        other = ex.explain(obs).cam
    np.testing.assert_allclose(batch, singles, rtol=1e-5, atol=1e-7 * singles.max())
    assert not np.allclose(batch, other), "another seed draws other masks"


def test_rise_centres_the_scores():
    masks = torch.rand(10, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scores = torch.randn(2, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fn = METHODS["rise"].fn
    torch.testing.assert_close(fn(scores + 100.0, masks), fn(scores, masks))
    by_hand = torch.relu(((scores - scores.mean(1, keepdim=True)) @ masks.reshape(10, -1)).reshape(2, 4, 5) / 5.0)
    torch.testing.assert_close(fn(scores, masks), by_hand)


# -- Integrated Gradients -------------------------------------------------------------------------------


def test_trapezoid_weights():
    alphas, weights = ig.trapezoid(4)
    torch.testing.assert_close(alphas, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    torch.testing.assert_close(weights, torch.tensor([0.125, 0.25, 0.25, 0.25, 0.125], dtype=torch.float64))


@pytest.mark.parametrize("baseline", [0.0, 1.5])
def test_path_gradient_is_exact_for_a_quadratic_score(baseline):
    # y = sum x^2: dy/dx = 2x is linear along the path, which the trapezoid rule integrates exactly;
    # IG_j = (x_j - b) * (x_j + b) = x_j^2 - b^2, summing to y(x) - y(b) (completeness).
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    seen_rows = []

    def score(points, rows):
        seen_rows.append(rows)
        return (points**2).flatten(1).sum(1)

    mean = ig.path_gradient(x, score, baseline=baseline, steps=3, chunk=5)
    attribution = (x - baseline) * mean
    torch.testing.assert_close(attribution, x**2 - baseline**2)
    torch.testing.assert_close(attribution.flatten(1).sum(1), (x**2 - baseline**2).flatten(1).sum(1))
    assert torch.equal(torch.cat(seen_rows), torch.arange(3).repeat_interleave(4))  # 3 x (3 + 1) points


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_ig_equals_a_hand_loop_over_alphas(agent_zips, breakout_obs, monkeypatch, algo):
    monkeypatch.setattr(ig, "STEPS", 8)
    monkeypatch.setattr(explainer_module, "CHUNK", 5)  # 2 x 9 path points cross chunk boundaries
    agent = load_agent(agent_zips[algo])
    obs = breakout_obs[2:4]
    with Explainer(agent, method="ig") as ex:
        got = ex.explain(obs)
    expected = np.zeros((2, 84, 84))
    completeness = []
    for n in range(2):
        x = torch.as_tensor(obs[n]).double()
        total = torch.zeros_like(x)
        for k in range(9):  # alpha = k / 8; the trapezoid's end points at half weight
            point = ((k / 8) * x).float()[None].requires_grad_(True)  # the black baseline is 0
            y = _logit_or_q(agent, point)[0, got.actions[n]]
            (g,) = torch.autograd.grad(y, point)
            total += (0.5 if k in (0, 8) else 1.0) / 8 * g[0].double()
        attribution = x * total
        expected[n] = np.maximum(attribution.sum(0).numpy(), 0)
        with torch.no_grad():
            ends = _logit_or_q(agent, torch.stack([x, torch.zeros_like(x)]).float())[:, got.actions[n]]
        completeness.append((ends[0].item(), attribution.sum().item(), (ends[0] - ends[1]).item()))
    assert expected.max() > 0 and (expected == 0).any()
    np.testing.assert_allclose(got.cam, expected, rtol=1e-4, atol=1e-5 * expected.max())
    np.testing.assert_array_equal(got.cam_input, got.cam)
    np.testing.assert_allclose(got.score, [y for y, _, _ in completeness], rtol=1e-5, atol=1e-6)
    for _, summed, moved in completeness:  # 8 intervals on a piecewise-linear net: near, not exact
        assert abs(summed - moved) <= 0.2 * abs(moved) + 1e-6


def test_ig_under_an_outer_no_grad_is_the_same(agent_zips, breakout_obs, monkeypatch):
    monkeypatch.setattr(ig, "STEPS", 4)
    agent = load_agent(agent_zips["ppo"])
    with Explainer(agent, method="ig") as ex:
        plain = ex.explain(breakout_obs[:2]).cam
        with torch.no_grad():
            inside = ex.explain(breakout_obs[:2]).cam
            assert not torch.is_grad_enabled()
    np.testing.assert_array_equal(inside, plain)


# -- both: the model untouched, refusals, the CLI -------------------------------------------------------


@pytest.mark.parametrize("method", ["rise", "ig"])
def test_the_model_is_left_as_it_was(agent_zips, breakout_obs, monkeypatch, method):
    monkeypatch.setattr(rise, "MASKS", MASKS)
    monkeypatch.setattr(ig, "STEPS", 4)
    agent = load_agent(agent_zips["dqn"])
    policy = agent.policy
    policy.train(True)
    params = list(policy.parameters())
    params[0].grad = torch.full_like(params[0], 3.0)
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    flags = [p.requires_grad for p in params]
    with Explainer(agent, method=method) as ex:
        got = ex.explain(breakout_obs[:2])
        assert not any(m.training for m in policy.modules())
        assert sum(len(m._forward_hooks) for m in policy.modules()) == 1  # the capture hook alone
    assert (got.cam >= 0).all() and np.isfinite(got.cam).all() and got.cam.shape == (2, 84, 84)
    assert all(m.training for m in policy.modules())
    assert not any(m._forward_hooks or m._backward_hooks for m in policy.modules())
    assert all(torch.equal(state[k], v) for k, v in policy.state_dict().items())
    assert torch.equal(params[0].grad, torch.full_like(params[0], 3.0))
    assert all(p.grad is None for p in params[1:])
    assert [p.requires_grad for p in params] == flags and torch.is_grad_enabled()


@pytest.mark.parametrize("method", ["rise", "ig"])
def test_dict_and_recurrent_agents_are_refused(method):
    import stable_baselines3 as sb3
    from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage

    from tests.test_families import build, venv_for
    from tests.test_multi_input import DictEnv

    dict_venv = VecTransposeImage(DummyVecEnv([DictEnv]))
    model = sb3.PPO("MultiInputPolicy", dict_venv, n_steps=16, batch_size=16, seed=2, device="cpu")
    with pytest.raises(RlcamError, match="Dict observations"):
        Explainer(as_agent(model), method=method)
    dict_venv.close()
    venv = venv_for(spaces.Discrete(3))
    with pytest.raises(RlcamError, match="LSTM"):
        Explainer(as_agent(build("recurrent", venv)), method=method)
    venv.close()


@pytest.mark.parametrize("method", ["rise", "ig"])
def test_record_with_the_method(agent_zips, tmp_path, capsys, monkeypatch, method):
    monkeypatch.setattr(rise, "MASKS", MASKS)
    monkeypatch.setattr(ig, "STEPS", 4)
    out = tmp_path / f"{method}.mp4"
    argv = ["record", "--env", "Breakout", "--agent", str(agent_zips["ppo"]), "--steps", "3", "--method", method]
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    trace = load_trace(out.with_suffix(".npz"))
    assert trace.meta["method"] == method
    assert trace["cam"].shape == (3, 84, 84) and (trace["cam"] >= 0).all() and trace["cam"].max() > 0
    np.testing.assert_array_equal(trace["cam_input"], trace["cam"])
    assert out.stat().st_size > 0
