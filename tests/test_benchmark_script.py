"""scripts/benchmark.py turns given timings into the right ratios, verdicts and tables (no timing here)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parent.parent / "scripts" / "benchmark.py"
_spec = importlib.util.spec_from_file_location("rlcam_benchmark_script", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_ratios_divide_by_the_baseline():
    times = {"predict": 0.002, "rlcam": 0.0024, "gradcam": 0.0072}
    assert bench.ratios(times, "predict") == pytest.approx({"predict": 1.0, "rlcam": 1.2, "gradcam": 3.6})
    assert bench.ratios(times, "rlcam") == pytest.approx({"predict": 1 / 1.2, "rlcam": 1.0, "gradcam": 3.0})


@pytest.mark.parametrize(
    ("value", "target", "at_most", "verdict"),
    [(1.2, 1.2, True, "met"), (1.2001, 1.2, True, "missed"), (4.0, 4.0, False, "met"), (3.99, 4.0, False, "missed")],
)
def test_targets_are_inclusive_bounds(value, target, at_most, verdict):
    assert bench.met(value, target, at_most) == verdict


def test_paired_ratio_takes_the_ratio_round_by_round():
    # Round 2 ran under load (both slower); pairing cancels it, a ratio of medians would not.
    samples = {"a": [1.0, 10.0, 1.2], "b": [2.0, 20.0, 2.0]}
    assert bench.paired_ratio(samples, "a", "b") == pytest.approx((0.5, 0.5, 0.55))
    assert bench.quartiles([3.0]) == (3.0, 3.0, 3.0)
    assert bench.fmt_ratio((0.5, 0.5, 0.55)) == "0.50 (0.50-0.55)"


def test_calls_rows_give_median_ms_and_paired_ratios():
    samples = {"predict": [0.002, 0.004, 0.002], "rlcam": [0.0025, 0.005, 0.0026], "captum": [0.006, 0.012, 0.006]}
    rows = bench.calls_rows(samples)
    # x predict per round: rlcam 1.25, 1.25, 1.3 -> 1.25; captum 3, 3, 3; x rlcam: captum 2.4, 2.4, 2.31 -> 2.4
    assert [row[1:] for row in rows] == [
        ["2.00", "1.00", "0.80"],
        ["2.60", "1.25", "1.00"],
        ["6.00", "3.00", "2.40"],
    ]
    assert rows[0][0] == bench.METHOD_LABELS["predict"]


def test_throughput_rows_are_env_steps_per_second_relative_to_one_env():
    # seconds per call of a batch of n envs, per round
    samples = {8: [0.004, 0.008], 1: [0.002, 0.004], 2: [0.003, 0.006]}
    rows = bench.throughput_rows(samples)
    # 1 env: 1 / 0.003 s = 333/s; 2 envs: 2 / 0.0045 = 444/s, gain 2 * 0.002 / 0.003 = 1.33 each round
    assert rows == [["1", "333", "1.00"], ["2", "444", "1.33"], ["8", "1333", "4.00"]]


def test_max_rel_diff_is_the_worst_sample_relative_to_its_own_peak():
    reference = np.array([[[1.0, 2.0]], [[10.0, 0.0]]])
    other = np.array([[[1.0, 2.5]], [[10.0, 1.0]]])  # sample 0: 0.5 / 2; sample 1: 1 / 10
    assert bench.max_rel_diff(reference, other) == pytest.approx(0.25)
    assert bench.max_rel_diff(np.zeros((1, 2, 2)), np.zeros((1, 2, 2))) == 0.0
    assert bench.max_rel_diff(np.zeros((1, 2, 2)), np.ones((1, 2, 2))) == float("inf")


def test_minmax_maps_each_map_to_unit_range():
    maps = np.array([[[2.0, 4.0], [6.0, 10.0]]])
    np.testing.assert_allclose(bench.minmax(maps), [[[0.0, 0.25], [0.5, 1.0]]], atol=1e-6)


def test_replace_block_keeps_the_text_around_the_markers():
    text = f"# Title\n\nintro\n\n{bench.BEGIN}\nold\n{bench.END}\n\nanalysis\n"
    new = bench.replace_block(text, "new table")
    assert new == f"# Title\n\nintro\n\n{bench.BEGIN}\nnew table\n{bench.END}\n\nanalysis\n"
    assert bench.replace_block(new, "new table") == new
    assert bench.replace_block("# Title\n", "t") == f"# Title\n\n{bench.BEGIN}\nt\n{bench.END}\n"


def _calls(rows, peers=False):
    versions = {"torch": "2", "stable_baselines3": "2", "grad-cam": "1", "captum": "0"}
    return dict(versions=versions, peers=peers, repeats=3, calls=10, rows=rows, agreement=[])


def test_render_computes_every_verdict_from_the_timings():
    results = dict(
        calls=_calls([dict(algo="ppo", batch=1, samples={"predict": [0.002, 0.004], "rlcam": [0.0022, 0.0044]})]),
        peers=_calls(
            [
                dict(
                    algo="dqn",
                    batch=8,
                    samples={
                        "predict": [0.004, 0.004, 0.004],
                        "rlcam": [0.005, 0.005, 0.005],
                        "gradcam": [0.016, 0.015, 0.017],
                        "captum": [0.009, 0.009, 0.009],
                    },
                )
            ],
            peers=True,
        ),
        e2e=dict(
            versions={"torch": "2", "interpreter": "python"},
            steps=100,
            repeats=3,
            seconds={"rlcam": 2.6, "ffmpeg": 2.0, "plain": 1.0},
            wall_samples={"rlcam": [2.6, 5.0, 2.8], "ffmpeg": [2.0, 4.0, 2.0], "plain": [1.0, 2.0, 1.0]},
            loop_steps_per_s={"rlcam": 50, "ffmpeg": 100, "plain": 200},
            cpu_self_s={"rlcam": 2, "ffmpeg": 1, "plain": 1},
            cpu_children_s={"rlcam": 1, "ffmpeg": 0.1, "plain": 0},
        ),
        memory=[
            dict(steps=1000, seconds=10, vmhwm_mb=400.0, vmhwm_before_mb=200.0),
            dict(steps=5000, seconds=50, vmhwm_mb=420.0, vmhwm_before_mb=200.0),
        ],
        scale=dict(
            repeats=3,
            calls=10,
            record_steps=50,
            explain_samples={"1": [0.002, 0.004], "2": [0.003, 0.006], "4": [0.004, 0.008], "8": [0.0038, 0.0076]},
            record_env_steps_per_s={"1": 30.0, "2": 60.0, "4": 100.0, "8": 150.0},
        ),
    )
    info = dict(date="today", command="python scripts/benchmark.py", cpu="cpu", cores=2, system="linux", load=(1, 1, 1))
    text = bench.render(results, info)
    for row in [
        "| P1 rlcam / predict <= 1.2 | PPO batch 1, project venv | 1.10 (1.10-1.10) | met |",
        "| P1 rlcam / predict <= 1.2 | DQN batch 8, peers venv | 1.25 (1.25-1.25) | missed |",
        "| pytorch-grad-cam `GradCAM` / rlcam >= 3.0 | DQN batch 8, peers venv | 3.20 (3.10-3.30) | met |",
        "| Captum `LayerGradCam` / rlcam >= 2.0 | DQN batch 8, peers venv | 1.80 (1.80-1.80) | missed |",
        "| P2 record / ffmpeg <= 1.3 | 100 steps | 1.30 (1.27-1.35) | met |",
        "| P3 peak-RSS growth <= 50 MB | 1000 -> 5000 steps | +20.0 MB | met |",
        "| P4 explain throughput 8 envs / 1 env >= 4.0 | explain alone | 4.21 (4.21-4.21) | met |",
    ]:
        assert row in text
    assert "(+5.00 MB per 1000 steps; +45.0 MB if extended linearly to 1k -> 10k)" in text
