"""`rlcam check`: a policy passes against its own baseline, damaged ones fail, bad baselines exit 2."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import numpy as np
import pytest
import torch

from rlcam.agents import load_agent
from rlcam.check import Thresholds, check, rank_correlation, top_iou
from rlcam.cli import main


@pytest.fixture(scope="module")
def baseline(agent_zips, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "base.mp4"
    code = main(["record", "--agent", str(agent_zips["ppo"]), "--steps", "40", "--out", str(out), "--save-obs"])
    assert code == 0
    return out.with_suffix(".npz")


def _damaged(src, dst, seed=0):
    """The agent with its last conv layer's weights shuffled: same statistics, broken features."""
    agent = load_agent(src)
    conv = agent.policy.features_extractor.cnn[4]
    with torch.no_grad():
        flat = conv.weight.flatten()
        conv.weight.copy_(
            flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))].view_as(conv.weight)
        )
    agent.model.save(dst)
    return dst


def test_agent_passes_against_its_own_baseline(agent_zips, baseline, tmp_path, capsys):
    junit, report_json = tmp_path / "check.xml", tmp_path / "check.json"
    code = main(
        [
            "check",
            "--agent",
            str(agent_zips["ppo"]),
            "--baseline",
            str(baseline),
            "--junit",
            str(junit),
            "--json",
            str(report_json),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "result: PASS" in out
    report = json.loads(report_json.read_text())
    assert report["passed"] is True
    values = {c["name"]: c["value"] for c in report["criteria"]}
    assert values["action agreement"] == 1.0
    assert values["map correlation (median)"] > 0.99
    assert {"ball attention vs baseline", "paddle attention vs baseline"} <= set(values)
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("failures") == "0" and len(suite.findall("testcase")) == len(report["criteria"])


def test_damaged_copy_fails_and_says_where(agent_zips, baseline, tmp_path, capsys):
    damaged = _damaged(agent_zips["ppo"], tmp_path / "damaged.zip")
    junit = tmp_path / "check.xml"
    code = main(["check", "--agent", str(damaged), "--baseline", str(baseline), "--junit", str(junit)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "  FAIL  " in out and "result: REGRESSION" in out
    assert "regressed steps" in out
    suite = ElementTree.parse(junit).getroot()
    assert int(suite.get("failures")) >= 1
    assert any(case.find("failure") is not None for case in suite.findall("testcase"))


def test_python_api_and_thresholds(agent_zips, baseline, tmp_path):
    report = check(agent_zips["ppo"], baseline, Thresholds(min_attention={"ball": 0.99}))
    failed = [c.name for c in report.failures]
    assert failed == ["ball attention"], report.text()
    with pytest.raises(Exception, match="no object named"):
        check(agent_zips["ppo"], baseline, Thresholds(min_attention={"alien": 0.1}))


def test_own_mode_compares_return(agent_zips, baseline, capsys):
    code = main(["check", "--agent", str(agent_zips["ppo"]), "--baseline", str(baseline), "--mode", "own"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "return" in out and "action agreement" not in out


def test_spec_file(agent_zips, baseline, tmp_path, capsys):
    spec = tmp_path / "rlcam.toml"
    spec.write_text("min_action_agreement = 0.95\n[min_attention]\npaddle = 0.99\n")
    code = main(["check", "--agent", str(agent_zips["ppo"]), "--baseline", str(baseline), "--spec", str(spec)])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL  paddle attention " in out and "needs >= 0.950" in out


@pytest.mark.parametrize("case", ["missing", "garbage", "truncated", "not a trace", "bad spec", "bad attention"])
def test_bad_baselines_exit_2(case, agent_zips, baseline, tmp_path, capsys):
    args = ["check", "--agent", str(agent_zips["ppo"])]
    path = tmp_path / "b.npz"
    if case == "missing":
        args += ["--baseline", str(tmp_path / "none.npz")]
    elif case == "garbage":
        path.write_bytes(b"not a zip at all")
        args += ["--baseline", str(path)]
    elif case == "truncated":
        data = baseline.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        args += ["--baseline", str(path)]
    elif case == "not a trace":
        np.savez(path, meta=np.array(json.dumps({"env_id": "BreakoutNoFrameskip-v4", "seed": 0})))
        args += ["--baseline", str(path)]
    elif case == "bad spec":
        spec = tmp_path / "s.json"
        spec.write_text('{"min_action_agreemnt": 0.9}')
        args += ["--baseline", str(baseline), "--spec", str(spec)]
    else:
        args += ["--baseline", str(baseline), "--min-attention", "ball:0.4"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("rlcam: error: ") and "Traceback" not in err


def test_rank_correlation_and_iou_by_hand():
    a = np.array([0.0, 0.0, 1.0, 2.0])
    assert rank_correlation(a, a * 3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(np.zeros(4), np.zeros(4)) == 1.0 and rank_correlation(np.zeros(4), a) == 0.0
    # ties share ranks: [0, 0, 1, 2] -> [1.5, 1.5, 3, 4]; [0, 1, 1, 2] -> [1, 2.5, 2.5, 4]
    expected = np.corrcoef([1.5, 1.5, 3, 4], [1, 2.5, 2.5, 4])[0, 1]
    assert rank_correlation(a, np.array([0.0, 1.0, 1.0, 2.0])) == pytest.approx(expected)
    assert top_iou(np.array([1.0, 0, 0, 5]), np.array([0, 0, 2.0, 9]), 0.5) == pytest.approx(1 / 3)


def test_a_continuous_agent_is_checked_by_the_component_rule(tmp_path, capsys):
    """Box actions: a step agrees when every component is within 5% of its bounds' range (as compare)."""
    from rlcam.record import RecordConfig, record
    from tests.test_compare import STEER, _steer_agent

    same, apart = _steer_agent(tmp_path / "same.zip", (0.0, 0.0)), _steer_agent(tmp_path / "apart.zip", (0.0, 0.5))
    record(RecordConfig(agent=same, env=STEER, steps=12, out=tmp_path / "base.mp4", video=False))
    base = tmp_path / "base.npz"
    assert main(["check", "--agent", str(same), "--baseline", str(base)]) == 0
    assert "action agreement             1.000" in capsys.readouterr().out
    report = check(apart, base)
    agreement = next(c for c in report.criteria if c.name == "action agreement").value
    assert agreement < 0.5 and not report.passed
