"""`rlcam report`: the page's data against independent computations, and the page in a real Chromium.

A short Breakout run of the shipped agents is recorded once; the page is then driven with keys and
clicks in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through selenium) and its
canvas read back pixel by pixel: against the recorded MP4 (codec tolerance, and no off-by-one),
and against the recorder's own blending computed here in Python from the trace.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import zlib
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from rlcam.cli import main
from rlcam.colormap import LUT
from rlcam.norm import Normalizer
from rlcam.record import RecordConfig, _placed_indices, record
from rlcam.render import _paint_heat
from rlcam.report import encode_frames, placement, run_from_trace, series, write_report
from rlcam.video import load_trace

ROOT = Path(__file__).resolve().parents[1]
PPO = ROOT / "agents" / "breakout_ppo.zip"
QRDQN = ROOT / "agents" / "breakout_qrdqn.zip"
STEPS = 80


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    """80 Breakout steps of the shipped PPO with every action's map: (video, trace, page)."""
    root = tmp_path_factory.mktemp("report")
    video = root / "run.mp4"
    record(RecordConfig(agent=PPO, steps=STEPS, out=video, all_actions=True))
    page = write_report(root / "run.npz").path
    return video, root / "run.npz", page


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the page's data -----------------------------------------------------------------------------


def decode_frames(spec: dict) -> np.ndarray:
    """What the page's FrameStore does, written again in numpy: inflate, undo the XOR chain, look up."""
    H, W, C = spec["height"], spec["width"], spec["channels"]
    planes = []
    for chunk in spec["chunks"]:
        block = np.frombuffer(zlib.decompress(base64.b64decode(chunk)), np.uint8).reshape(-1, H, W, C)
        planes.append(np.bitwise_xor.accumulate(block, axis=0))
    planes = np.concatenate(planes)
    if C == 3:
        return planes
    palette = np.frombuffer(base64.b64decode(spec["palette"]["b64"]), np.uint8).reshape(-1, 3)
    return palette[planes[..., 0]]


def test_frames_round_trip_exactly_with_a_palette_and_without():
    rng = np.random.default_rng(0)
    few = rng.choice(np.array([[0, 0, 0], [200, 72, 72], [142, 142, 142], [1, 2, 3]], np.uint8), size=(70, 21, 16))
    spec = encode_frames(few)
    assert spec["channels"] == 1 and len(spec["chunks"]) == 3
    np.testing.assert_array_equal(decode_frames(spec), few)
    many = rng.integers(0, 256, size=(40, 21, 16, 3), dtype=np.uint8)  # thousands of colours: RGB planes
    spec = encode_frames(many)
    assert spec["channels"] == 3
    np.testing.assert_array_equal(decode_frames(spec), many)


def test_a_colour_missed_by_the_palette_sample_is_still_exact():
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    frames[1, 3, 5] = (255, 0, 0)  # one pixel off the 4x4 sampling grid
    np.testing.assert_array_equal(decode_frames(encode_frames(frames)), frames)


def test_replayed_frames_are_the_recorded_ones(ppo_run):
    """The replay's frame k is the one under the video's frame k: compare the game area, decoded in order."""
    video, trace, _ = ppo_run
    run = run_from_trace(trace)
    decoded = decoded_game_area(video, run.frames.shape[1:3], scale=page_scale(run))
    assert len(decoded) == run.steps == STEPS
    # The video has the map blended in; where the map is dark the game shows through, so compare
    # there: frame k must match video frame k far better than its neighbours.
    for k in (5, 40, STEPS - 2):
        err = [np.abs(decoded[k].astype(float) - run.frames[j]).mean() for j in (k - 1, k, k + 1)]
        assert err[1] < min(err[0], err[2]), err


def test_action_values_are_stored_and_agree_with_the_actions(ppo_run):
    trace = load_trace(ppo_run[1])
    probs = trace["action_values"]
    assert probs.shape == (STEPS, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(1), trace["action"])  # argmax actions


def test_series_against_an_independent_computation(ppo_run):
    run = run_from_trace(ppo_run[1])
    s = series(run)
    p = run.arrays["action_values"].astype(np.float64)
    entropy = np.array([-sum(x * np.log(x) for x in row if x > 0) for row in p])
    np.testing.assert_allclose(s["entropy"], entropy, rtol=1e-9)
    top2 = np.array([sorted(row)[-1] - sorted(row)[-2] for row in p])
    np.testing.assert_allclose(s["margin"], top2, rtol=1e-9)
    returns, total = [], 0.0
    for r, over in zip(run.arrays["reward"], run.arrays["game_over"], strict=True):
        total += r
        returns.append(total)
        total = 0.0 if over else total
    np.testing.assert_allclose(s["return"], returns)
    np.testing.assert_allclose(s["peak"], run.arrays["cam"].reshape(STEPS, -1).max(1))
    # Attention on the ball, one step by brute force over the frame's pixels.
    rows, cols = run.frames.shape[1:3]
    ys, xs = placement(run.meta).frame_matrices(rows, cols)
    t = next(t for t in range(STEPS) if np.isfinite(run.arrays["obj_ball"][t]).all() and s["peak"][t] > 0)
    heat = ys.astype(np.float64) @ run.arrays["cam"][t] @ xs.T.astype(np.float64)
    by, bx = run.arrays["obj_ball"][t]
    near = sum(heat[y, x] for y in range(rows) for x in range(cols) if (y - by) ** 2 + (x - bx) ** 2 <= 100)
    assert s["share_ball"][t] == pytest.approx(near / heat.sum(), rel=1e-4)


def test_page_is_one_offline_file(ppo_run):
    text = ppo_run[2].read_text()
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert "http://" not in text and "https://" not in text
    data = text.split('id="rlcam-data">', 1)[1].split("</script>", 1)[0]
    payload = json.loads(data)
    assert payload["steps"] == STEPS and len(payload["runs"]) == 1
    lut = np.frombuffer(base64.b64decode(payload["lut"]["b64"]), np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(lut, LUT)  # the video's colormap


def test_size_stays_within_the_budget(ppo_run):
    """The issue's budget is 20 MB for 1000 Breakout steps; this run's bytes per step, scaled, must fit."""
    per_step = ppo_run[2].stat().st_size / STEPS
    assert per_step * 1000 < 20e6, per_step


# -- bad input: one sentence, exit 2, nothing written ---------------------------------------------------


def _trace_without(src: Path, dst: Path, key: str) -> Path:
    with np.load(src) as npz:
        np.savez(dst, **{k: npz[k] for k in npz.files if k != key})
    return dst


def _tampered(src: Path, dst: Path) -> Path:
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["reward"] = arrays["reward"].copy()
    arrays["reward"][30] += 1.0
    np.savez(dst, **arrays)
    return dst


def _short_video(src: Path, dst: Path) -> Path:
    reader = imageio_ffmpeg.read_frames(str(src))
    meta = reader.__next__()
    writer = imageio_ffmpeg.write_frames(str(dst), meta["size"], fps=30, macro_block_size=2)
    writer.send(None)
    for i, frame in enumerate(reader):
        if i < 10:
            writer.send(frame)
    writer.close()
    return dst


BAD = {
    "missing": (lambda d, run: d / "nope.npz", "does not exist"),
    "truncated": (lambda d, run: _write(d / "cut.npz", run[1].read_bytes()[:5000]), "truncated or corrupt"),
    "foreign": (lambda d, run: _savez(d / "foreign.npz"), "did not write it"),
    "no maps": (lambda d, run: _trace_without(run[1], d / "nocam.npz", "cam"), "lacks cam"),
    "not reproducible": (lambda d, run: _tampered(run[1], d / "tampered.npz"), "reward differs at step 30"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _savez(path: Path) -> Path:
    np.savez(path, cam=np.zeros((3, 7, 7)))
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_trace_is_one_sentence_exit_2_and_no_page(case, ppo_run, tmp_path, capsys):
    make, words = BAD[case]
    trace = make(tmp_path, ppo_run)
    out = tmp_path / "page.html"
    code, _, err = run_cli(["report", trace, "--out", out], capsys)
    assert code == 2 and words in err and err.count("\n") == 1, err
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_video_with_another_frame_count_is_refused(ppo_run, tmp_path, capsys):
    short = _short_video(ppo_run[0], tmp_path / "short.mp4")
    out = tmp_path / "page.html"
    code, _, err = run_cli(["report", ppo_run[1], "--out", out, "--video", short], capsys)
    assert code == 2 and f"has 10 frames but the trace has {STEPS} steps" in err and not out.exists()


def test_existing_page_needs_overwrite(ppo_run, tmp_path, capsys):
    out = tmp_path / "page.html"
    out.write_text("mine")
    code, _, err = run_cli(["report", ppo_run[1], "--out", out], capsys)
    assert code == 2 and "--overwrite" in err and out.read_text() == "mine"
    code, stdout, _ = run_cli(["report", ppo_run[1], "--out", out, "--overwrite"], capsys)
    assert code == 0 and "80 steps" in stdout and out.read_text().startswith("<!doctype html>")


@pytest.fixture(scope="module")
def qrdqn_page(tmp_path_factory):
    """``rlcam record --report`` of 30 steps of the shipped QR-DQN: the page beside the video."""
    out = tmp_path_factory.mktemp("qrdqn") / "q.mp4"
    assert main(["record", "--agent", str(QRDQN), "--steps", "30", "--out", str(out), "--report", "--quiet"]) == 0
    return out.with_suffix(".html")


def test_record_report_writes_the_page_beside_the_video(qrdqn_page, tmp_path, capsys):
    assert qrdqn_page.is_file() and qrdqn_page.with_suffix(".npz").is_file()
    assert '"video_link":"q.mp4"' in qrdqn_page.read_text()  # the page links the run's video
    (tmp_path / "x.html").write_text("taken")
    code, _, err = run_cli(["record", "--agent", QRDQN, "--steps", 5, "--out", tmp_path / "x.mp4", "--report"], capsys)
    assert code == 2 and "x.html already exists" in err and not (tmp_path / "x.mp4").exists()


# -- in a real browser ---------------------------------------------------------------------------------------


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through selenium, offline. Absent outside CI: skip with the reason; in CI: fail."""
    found = _chromium()
    if found is None or not _has_selenium():
        reason = "Chromium, chromedriver or selenium is not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the browser tests")
        pytest.skip(reason)
    os.environ["SE_AVOID_STATS"] = "true"  # selenium would otherwise try the network first
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1200",
    ):
        options.add_argument(arg)
    options.binary_location = found[0]
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    yield driver
    driver.quit()


def _has_selenium() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return True


def open_page(driver, page: Path, fragment: str = "") -> None:
    driver.get("about:blank")  # a new document even when only the fragment changes
    driver.get_log("browser")  # drop earlier entries
    driver.get(page.resolve().as_uri() + fragment)
    wait_for(driver, "return document.body.dataset.ready === '1'")


def wait_for(driver, script: str, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {script}")


def press(driver, *keys) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def counter(driver) -> int:
    return int(driver.find_element("id", "step").text)


_READ_CANVAS = """
const c = document.querySelector(arguments[0]);
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let s = '';
for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
return [c.width, c.height, c.dataset.step || '', btoa(s)];
"""


def canvas(driver, selector: str = ".run[data-run='0'] canvas.frame") -> tuple[np.ndarray, int]:
    """The canvas's pixels ``(H, W, 3)`` and the step it says it shows."""
    w, h, step, data = driver.execute_script(_READ_CANVAS, selector)
    rgba = np.frombuffer(base64.b64decode(data), np.uint8).reshape(h, w, 4)
    return rgba[..., :3].copy(), int(step) if step else -1


def shows(driver, step: int, selector: str = ".run[data-run='0'] canvas.frame") -> np.ndarray:
    wait_for(driver, f"return document.querySelector(\"{selector}\").dataset.step === '{step}'")
    pixels, shown = canvas(driver, selector)
    assert shown == step
    return pixels


def console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def decoded_game_area(video: Path, frame_hw: tuple[int, int], scale: int) -> list[np.ndarray]:
    """The video's frames in order (no seeking), each game area averaged back to frame pixels."""
    reader = imageio_ffmpeg.read_frames(str(video))
    width, height = reader.__next__()["size"]
    h, w = frame_hw
    out = []
    for raw in reader:
        frame = np.frombuffer(raw, np.uint8).reshape(height, width, 3)[: h * scale, : w * scale].astype(float)
        out.append(frame.reshape(h, scale, w, scale, 3).mean(axis=(1, 3)))
    return out


def page_scale(run) -> int:
    from rlcam.report import display_scale

    return display_scale(run.meta, run.frames.shape[1:3])


def expected_view(run, k: int, norm: str, alpha: float = 0.6) -> np.ndarray:
    """Step k as the recorder blends it (rlcam.record/rlcam.render), from the trace and the frames."""
    scale = page_scale(run)
    normalizer = Normalizer(norm, 1)
    for t in range(k + 1):
        full = normalizer.update(run.arrays["cam"][t][None])[0]
        normalizer.end_episodes(run.arrays["game_over"][t : t + 1])
    h, w = run.frames.shape[1:3]
    ys, xs = (torch.from_numpy(m) for m in placement(run.meta).frame_matrices(h * scale, w * scale))
    index = _placed_indices(run.arrays["cam"][k], full, ys, xs)
    game = Image.fromarray(run.frames[k]).resize((w * scale, h * scale), Image.Resampling.NEAREST)
    _paint_heat(game, Image.fromarray(index), alpha)
    return np.asarray(game)


def test_page_loads_without_console_errors(browser, ppo_run):
    open_page(browser, ppo_run[2])
    assert console_errors(browser) == []
    assert counter(browser) == 0
    assert len(browser.find_elements("css selector", ".tile canvas")) == 4  # --all-actions: one tile per action


def test_keys_change_the_step_and_the_pixels(browser, ppo_run):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, ppo_run[2])
    before = shows(browser, 0)
    press(browser, Keys.ARROW_RIGHT)
    assert counter(browser) == 1
    after = shows(browser, 1)
    assert (before != after).any()
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ARROW_RIGHT).key_up(Keys.SHIFT).perform()
    assert counter(browser) == 11
    press(browser, Keys.ARROW_LEFT)
    assert counter(browser) == 10
    press(browser, Keys.END)
    assert counter(browser) == STEPS - 1
    press(browser, Keys.HOME)
    assert counter(browser) == 0
    press(browser, Keys.SPACE)  # play
    wait_for(browser, "return window.rlcam.step >= 5")
    press(browser, Keys.SPACE)  # pause
    paused_at = counter(browser)
    time.sleep(0.2)
    assert counter(browser) == paused_at > 0
    assert console_errors(browser) == []


def test_frame_at_step_k_is_the_videos_frame_k(browser, ppo_run):
    """Overlay on, the recording's normalisation and opacity: the page draws what the MP4 shows."""
    video, trace, page = ppo_run
    run = run_from_trace(trace)
    (h, w), s = run.frames.shape[1:3], page_scale(run)
    decoded = decoded_game_area(video, (h, w), s)
    for k in (0, 37, STEPS - 1):
        open_page(browser, page, f"#step={k}")
        pixels = shows(browser, k).astype(float).reshape(h, s, w, s, 3).mean(axis=(1, 3))
        err = {j: np.abs(pixels - decoded[j]).mean() for j in (k - 1, k, k + 1) if 0 <= j < STEPS}
        assert err[k] < 2.0, err  # H.264 at rlcam's quality: about 1 grey level on average
        assert all(err[k] < e for j, e in err.items() if j != k), err  # not its neighbour's frame
        # and exactly the recorder's own blend, computed here from the trace (one LUT step of rounding)
        want = expected_view(run, k, "running").astype(int)
        got = shows(browser, k).astype(int)
        assert np.abs(got - want).max() <= 3 and (got != want).mean() < 0.01


def test_overlay_off_shows_the_bare_frame(browser, ppo_run):
    run = run_from_trace(ppo_run[1])
    open_page(browser, ppo_run[2], "#step=20")
    on = shows(browser, 20)
    browser.find_element("id", "overlay").click()
    off, _ = canvas(browser)
    assert (on != off).any()
    s = page_scale(run)
    np.testing.assert_array_equal(off, run.frames[20].repeat(s, axis=0).repeat(s, axis=1))
    press(browser, "o")  # the key turns it back on
    np.testing.assert_array_equal(canvas(browser)[0], on)


@pytest.mark.parametrize("norm", ["frame", "episode", "running"])
def test_normalisation_switches_live_and_matches_the_recorder(browser, ppo_run, norm):
    run = run_from_trace(ppo_run[1])
    k = 50
    open_page(browser, ppo_run[2], f"#step={k}")
    browser.find_element("css selector", f"#norm button[data-norm='{norm}']").click()
    got = shows(browser, k).astype(int)
    want = expected_view(run, k, norm).astype(int)
    assert np.abs(got - want).max() <= 3 and (got != want).mean() < 0.01
    normalizer = Normalizer(norm, 1)
    for t in range(k + 1):
        full = normalizer.update(run.arrays["cam"][t][None])[0]
        normalizer.end_episodes(run.arrays["game_over"][t : t + 1])
    label = browser.find_element("css selector", ".colorbar .full").text
    assert float(label.split()[0]) == pytest.approx(full, rel=1e-3)


def test_timeline_click_goes_to_that_step(browser, ppo_run):
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(browser, ppo_run[2])
    timeline = browser.find_element("id", "timeline")
    left = float(timeline.get_attribute("data-plot-left"))
    width = float(timeline.get_attribute("data-plot-width"))
    for share in (0.25, 0.8):
        x = left + share * width
        want = round(share * (STEPS - 1))
        # selenium offsets are from the element's centre
        ActionChains(browser).move_to_element_with_offset(
            timeline, int(round(x - timeline.size["width"] / 2)), 0
        ).click().perform()
        assert abs(counter(browser) - want) <= 1  # one step is ~10 px here; integer pixel offsets
        shows(browser, counter(browser))
    assert browser.find_element("id", "tip").is_displayed()  # hovering shows the values


def test_url_hash_keeps_the_step(browser, ppo_run):
    from selenium.webdriver.common.keys import Keys

    open_page(browser, ppo_run[2], "#step=37")
    assert counter(browser) == 37
    shows(browser, 37)
    press(browser, Keys.ARROW_RIGHT)
    wait_for(browser, "return location.hash === '#step=38'")


def test_moments_are_a_click_away(browser, ppo_run):
    open_page(browser, ppo_run[2])
    buttons = browser.find_elements("css selector", ".moment-card button")
    assert buttons, "no moments listed"
    target = buttons[len(buttons) // 2]
    step = int(target.get_attribute("data-step"))
    target.click()
    assert counter(browser) == step
    shows(browser, step)


def test_qrdqn_page_shows_q_values(browser, qrdqn_page):
    open_page(browser, qrdqn_page)
    assert console_errors(browser) == []
    assert "q-values" in browser.find_element("css selector", ".panel").text.lower()
    assert browser.find_element("css selector", "#timeline").get_attribute("data-plot-width")


# -- every policy family -------------------------------------------------------------------------------------

TOY = "rlcam.toyenv:SteerToDot-v0"
PARTS = "rlcam.toyenv:SteerToDotParts-v0"
FIND = "rlcam.toyenv:FindTarget-v0"
GRID = "rlcam.gridenvs:RlcamMiniGrid-Empty-5x5-v0"
FAMILY_STEPS = 12
BIAS = (0.4, -0.7)  # the continuous agent's means, so its component bars are not all at 0


def _dict_agent(path: Path) -> Path:
    import warnings

    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env

    import rlcam.gridenvs  # noqa: F401  (registers the ids)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        venv = make_vec_env(GRID.split(":")[1], n_envs=1, seed=0)
        sb3.PPO("MultiInputPolicy", venv, n_steps=16, seed=0, device="cpu").save(path)
    return path


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """Tiny untrained agents of each family, recorded with ``rlcam record --report``: {name: (trace, page)}."""
    from stable_baselines3 import PPO

    from tests.test_families_cli import _save

    root = tmp_path_factory.mktemp("families")
    box = _save("ppo", TOY, root / "box.zip")
    model = PPO.load(box, device="cpu")
    with torch.no_grad():
        model.policy.action_net.bias.copy_(torch.tensor(BIAS))
    model.save(box)
    agents = {
        "box": (box, TOY, ["--save-obs"]),
        "parts": (_save("ppo", PARTS, root / "parts.zip"), PARTS, []),
        "lstm": (_save("recurrent", FIND, root / "lstm.zip"), FIND, []),
    }
    try:
        import minigrid  # noqa: F401

        agents["grid"] = (_dict_agent(root / "grid.zip"), GRID, ["--save-obs"])
    except ImportError:
        pass
    out = {}
    for name, (agent, env, extra) in agents.items():
        video = root / f"{name}.mp4"
        argv = ["record", "--env", env, "--agent", agent, "--steps", FAMILY_STEPS, "--out", video, "--report"]
        assert main([str(a) for a in [*argv, "--quiet", *extra]]) == 0, name
        out[name] = (video.with_suffix(".npz"), video.with_suffix(".html"))
    return out


def _family(families, name):
    if name not in families:
        pytest.skip("MiniGrid envs need the minigrid package (in the dev extra)")
    return families[name]


def shared_full(run, k: int, norm: str) -> float:
    """The recorder's scale at step k when one scale spans both sides of a signed map and every
    other image key's map (rlcam.record.StepWriter.write)."""
    maps = [run.arrays["cam"], run.arrays["cam_down"], *(run.arrays[f"key_cam_{key}"] for key in run.key_frames)]
    normalizer = Normalizer(norm, 1)
    for t in range(k + 1):
        full = normalizer.update(np.concatenate([m[t].reshape(1, -1) for m in maps], axis=1))[0]
        normalizer.end_episodes(run.arrays["game_over"][t : t + 1])
    return full


def expected_signed_view(run, k: int, signed: bool = True, alpha: float = 0.6, norm: str = "running") -> np.ndarray:
    """Step k as the recorder draws a signed map: both sides on one scale, the "pushes it down"
    side painted over the map in the cool ramp (rlcam.record.StepWriter + rlcam.render.compose)."""
    from rlcam.colormap import LUT_DOWN

    scale = page_scale(run)
    up, down = run.arrays["cam"], run.arrays["cam_down"]
    full = shared_full(run, k, norm)
    h, w = run.frames.shape[1:3]
    ys, xs = (torch.from_numpy(m) for m in placement(run.meta).frame_matrices(h * scale, w * scale))
    game = Image.fromarray(run.frames[k]).resize((w * scale, h * scale), Image.Resampling.NEAREST)
    _paint_heat(game, Image.fromarray(_placed_indices(up[k], full, ys, xs)), alpha)
    if signed:
        _paint_heat(game, Image.fromarray(_placed_indices(down[k], full, ys, xs)), alpha, LUT_DOWN.tobytes())
    return np.asarray(game)


def test_every_family_replays_exactly(families):
    """The replay reproduced each run (rewards, ends, stored observations), with continuous and structured actions."""
    for name in families:
        run = run_from_trace(families[name][0])
        assert run.steps == FAMILY_STEPS and families[name][1].is_file(), name
    box = run_from_trace(families["box"][0])
    assert box.space == {"low": [-1.0, -1.0], "high": [1.0, 1.0]}
    np.testing.assert_allclose(box.arrays["action"], np.tile(BIAS, (FAMILY_STEPS, 1)), atol=0.05)
    assert run_from_trace(families["parts"][0]).space == {"sizes": [3, 3]}


def test_a_continuous_trace_with_a_changed_reward_is_refused(families, tmp_path, capsys):
    bad = _tampered_at(families["box"][0], tmp_path / "bad.npz", step=5)
    code, _, err = run_cli(["report", bad, "--out", tmp_path / "bad.html"], capsys)
    assert code == 2 and "reward differs at step 5" in err and not (tmp_path / "bad.html").exists()


def _tampered_at(src: Path, dst: Path, step: int) -> Path:
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["reward"] = arrays["reward"].copy()
    arrays["reward"][step] += 0.01
    np.savez(dst, **arrays)
    return dst


def test_dict_frames_are_the_observed_image_key(families):
    """A Dict run's frames are its image key as the agent saw it (the trace's stored obs), not the render."""
    trace, _ = _family(families, "grid")
    run = run_from_trace(trace)
    assert run.space["image_key"] == "image" and run.space["input_names"] == ["direction", "image"]
    np.testing.assert_array_equal(run.frames, run.arrays["obs_image"].transpose(0, 2, 3, 1))
    s = series(run)
    np.testing.assert_array_equal(s["input_image"], run.arrays["input_shares"][:, 1])


def test_the_recorders_warnings_are_the_pages_notes(families):
    """MiniGrid's 56-px view loses its last 4 rows and columns to NatureCNN's strides: record said so,
    and the page says it too; an 84-px run has no such note."""
    trace, _ = _family(families, "grid")
    run = run_from_trace(trace)
    unseen = [n for n in run.notes if "never reach features_extractor.extractors.image" in n]
    assert unseen and unseen[0].startswith("recorded with a warning: input rows 52-55 and columns 52-55")
    assert not any("never reach" in n for n in run_from_trace(families["box"][0]).notes)


def test_family_series_against_an_independent_computation(families):
    box = run_from_trace(families["box"][0])
    s = series(box)
    np.testing.assert_array_equal(s["component_1"], box.arrays["action"][:, 1])
    assert "margin" not in s and "chosen" not in s  # no "chosen action's probability" for a continuous one
    parts = run_from_trace(families["parts"][0])
    s = series(parts)
    p, a = parts.arrays["action_values"].astype(np.float64), parts.arrays["action"]
    joint = [p[t, a[t, 0]] * p[t, 3 + a[t, 1]] for t in range(FAMILY_STEPS)]
    np.testing.assert_allclose(s["chosen"], joint, rtol=1e-9)
    entropy = [-sum(x * np.log(x) for x in row) for row in p]  # two independent parts: entropies add
    np.testing.assert_allclose(s["entropy"], entropy, rtol=1e-9)
    lstm = run_from_trace(families["lstm"][0])
    np.testing.assert_array_equal(series(lstm)["memory_effect"], lstm.arrays["memory_effect"])


def test_continuous_page_draws_frame_k_with_both_signs(browser, families):
    from selenium.webdriver.common.keys import Keys

    trace, page = families["box"]
    run = run_from_trace(trace)
    k = 7
    open_page(browser, page, f"#step={k}")
    assert console_errors(browser) == []
    both = shows(browser, k).astype(int)
    want = expected_signed_view(run, k).astype(int)
    assert np.abs(both - want).max() <= 3 and (both != want).mean() < 0.01
    browser.find_element("id", "signed").click()  # the "pushes down" side off: the warm map alone
    up = canvas(browser)[0].astype(int)
    assert (up != both).any()
    want = expected_signed_view(run, k, signed=False).astype(int)
    assert np.abs(up - want).max() <= 3 and (up != want).mean() < 0.01
    press(browser, "s")
    np.testing.assert_array_equal(canvas(browser)[0], both)
    browser.find_element("id", "overlay").click()  # no map at all: exactly the recorded frame k
    s = page_scale(run)
    np.testing.assert_array_equal(canvas(browser)[0], run.frames[k].repeat(s, axis=0).repeat(s, axis=1))
    # the component bars show the trace's values, the deterministic action's tick within the bounds
    nums = [e.text for e in browser.find_elements("css selector", ".bars.components .num")]
    minus = "\u2212"
    assert nums == [f"{'+' if v >= 0 else minus}{abs(v):.3f}" for v in run.arrays["action"][k]]
    ticks = browser.execute_script(
        "return [...document.querySelectorAll('.bars.components .tick')].map(e => parseFloat(e.style.left))"
    )
    np.testing.assert_allclose(ticks, (run.arrays["action_values"][k] + 1) / 2 * 100, atol=1e-3)
    tracks = browser.execute_script("return window.rlcam.tracks()")
    assert {"a0 taken", "a1 taken", "down peak"} <= set(tracks)
    press(browser, Keys.ARROW_RIGHT)
    assert counter(browser) == k + 1
    assert console_errors(browser) == []


def test_dict_page_draws_the_image_key_and_its_shares(browser, families):
    trace, page = _family(families, "grid")
    run = run_from_trace(trace)
    k = 5
    open_page(browser, page, f"#step={k}")
    assert console_errors(browser) == []
    got = shows(browser, k).astype(int)
    want = expected_view(run, k, "running").astype(int)
    assert np.abs(got - want).max() <= 3 and (got != want).mean() < 0.01
    browser.find_element("id", "overlay").click()
    s = page_scale(run)
    obs = run.arrays["obs_image"][k].transpose(1, 2, 0)  # what the agent saw, channel-last
    np.testing.assert_array_equal(canvas(browser)[0], obs.repeat(s, axis=0).repeat(s, axis=1))
    shares = [e.text for e in browser.find_elements("css selector", ".input-shares .num")]
    assert shares == [f"{100 * v:.1f}%" for v in run.arrays["input_shares"][k]]
    assert "share: image" in browser.execute_script("return window.rlcam.tracks()")
    assert not browser.find_element("id", "signed").is_displayed()  # no signed map here


def test_structured_and_recurrent_pages(browser, families):
    run = run_from_trace(families["parts"][0])
    open_page(browser, families["parts"][1], "#step=3")
    assert console_errors(browser) == []
    marked = [e.text for e in browser.find_elements("css selector", ".part-group .name.on")]
    assert marked == [f"a{p}={c}" for p, c in enumerate(run.arrays["action"][3])]  # the taken choice of each part
    assert len(browser.find_elements("css selector", ".tile canvas")) == 2  # a tile per part
    lstm = run_from_trace(families["lstm"][0])
    open_page(browser, families["lstm"][1], "#step=4")
    assert console_errors(browser) == []
    assert {"memory effect", "pixel effect"} <= set(browser.execute_script("return window.rlcam.tracks()"))
    stats = browser.find_elements("css selector", ".stat")
    memory = next(e for e in stats if e.find_element("css selector", ".k").text.lower() == "memory effect")
    shown = float(memory.find_element("css selector", ".v").text)
    assert shown == pytest.approx(float(lstm.arrays["memory_effect"][4]), rel=1e-3)


# -- Dict observations with two image keys --------------------------------------------------------------------

TWO = "rlcam.toydict:SteerDictTwoImages-v0"  # keys cue (2,), left, right (48, 48, 3); the layer is on right
LOUD = 30.0  # the left extractor's output scaled up (ReLU(c z) = c ReLU(z)): its map scales with it


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    """An untrained Dict PPO on two image keys, recorded with ``--save-obs --report``: (trace, page)."""
    import warnings

    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env

    import rlcam.toydict  # noqa: F401  (registers the ids)

    root = tmp_path_factory.mktemp("two_images")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        venv = make_vec_env(TWO.split(":")[1], n_envs=1, seed=0)
        model = sb3.PPO("MultiInputPolicy", venv, n_steps=16, seed=0, device="cpu")
    with torch.no_grad():  # the left key's features louder: its map, not the layer's, sets the shared scale
        linear = model.policy.features_extractor.extractors["left"].linear[0]
        linear.weight.mul_(LOUD)
        linear.bias.mul_(LOUD)
    model.save(root / "two.zip")
    video = root / "two.mp4"
    argv = ["record", "--env", TWO, "--agent", root / "two.zip", "--steps", FAMILY_STEPS, "--out", video]
    assert main([str(a) for a in [*argv, "--save-obs", "--report", "--quiet"]]) == 0
    return video.with_suffix(".npz"), video.with_suffix(".html")


def page_payload(page: Path) -> dict:
    return json.loads(page.read_text().split('id="rlcam-data">', 1)[1].split("</script>", 1)[0])


def decoded(spec: dict) -> np.ndarray:
    """A payload array as the page's ``arr`` reads it."""
    dtype = {"f4": "<f4", "i4": "<i4", "u1": "u1"}[spec["dtype"]]
    return np.frombuffer(base64.b64decode(spec["b64"]), dtype).reshape(spec["shape"])


def test_dict_payload_holds_every_image_keys_maps_frames_and_the_vector_elements(two_images):
    from rlcam.geometry import stretch_matrix

    trace, page = two_images
    arrays = load_trace(trace).arrays
    run = page_payload(page)["runs"][0]
    assert run["space"]["image_key"] == "right" and run["space"]["input_names"] == ["cue", "left", "right"]
    assert [k["key"] for k in run["key_maps"]] == ["left"]  # every image key but the layer's
    left = run["key_maps"][0]
    np.testing.assert_array_equal(decoded(left["cam"]), arrays["key_cam_left"])
    # the frames are the "left" key as the agent saw it, not the env's render
    np.testing.assert_array_equal(decode_frames(left["frames"]), arrays["obs_left"].transpose(0, 2, 3, 1))
    # the stretch onto the pane at display size, sent as its non-zero entries: the video's matrix
    scale = page_payload(page)["scale"]
    for axis, n in (("ys", 48), ("xs", 48)):
        sparse = left[axis]
        dense = np.zeros(sparse["shape"], np.float32)
        start, idx, w = decoded(sparse["start"]), decoded(sparse["idx"]), decoded(sparse["w"])
        for r in range(len(dense)):
            dense[r, idx[start[r] : start[r + 1]]] = w[start[r] : start[r + 1]]
        np.testing.assert_array_equal(dense, stretch_matrix(n * scale, 48).astype(np.float32))
    assert [a["key"] for a in run["attributions"]] == ["cue"]
    np.testing.assert_array_equal(decoded(run["attributions"][0]["values"]), arrays["attr_cue"])


def test_dict_maps_of_another_grid_than_the_keys_images_are_refused(two_images, tmp_path, capsys):
    with np.load(two_images[0]) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["key_cam_left"] = arrays["key_cam_left"][:, ::2, ::2]
    np.savez(tmp_path / "bad.npz", **arrays)
    code, _, err = run_cli(["report", tmp_path / "bad.npz", "--out", tmp_path / "bad.html"], capsys)
    assert code == 2 and "maps of key 'left' on a 24x24 grid" in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad.html").exists()


def expected_key_view(run, key: str, k: int, norm: str, alpha: float = 0.6) -> np.ndarray:
    """Another image key's pane at step k as the recorder draws it (rlcam.record.StepWriter.beside):
    its observation upscaled, its input-grid map stretched bilinearly over it, on the shared scale."""
    from rlcam.geometry import stretch_matrix

    scale = page_scale(run)
    image = run.arrays[f"obs_{key}"][k].transpose(1, 2, 0)  # what the agent saw, channel-last
    cams = run.arrays[f"key_cam_{key}"]
    h, w = image.shape[:2]
    ys, xs = (
        torch.from_numpy(stretch_matrix(n * scale, m).astype(np.float32))
        for n, m in zip((h, w), cams.shape[1:], strict=True)
    )
    game = Image.fromarray(image).resize((w * scale, h * scale), Image.Resampling.NEAREST)
    _paint_heat(game, Image.fromarray(_placed_indices(cams[k], shared_full(run, k, norm), ys, xs)), alpha)
    return np.asarray(game)


def test_dict_page_draws_every_image_key_on_one_scale_and_the_elements(browser, two_images):
    trace, page = two_images
    run = run_from_trace(trace)
    peaks = run.arrays["key_cam_left"].reshape(FAMILY_STEPS, -1).max(axis=1)
    k = int(np.argmax(peaks[1:])) + 1  # a step with the other key's map well lit
    own = max(run.arrays["cam"][k].max(), run.arrays["cam_down"][k].max())
    assert peaks[k] > 2 * own  # so the other key's map, not the layer's, sets the shared scale here
    open_page(browser, page, f"#step={k}")
    assert console_errors(browser) == []
    panes = browser.find_elements("css selector", ".run[data-run='0'] .pane")
    assert [p.get_attribute("data-key") for p in panes] == ["left", "right"]  # the space's order, as the video
    captions = [p.find_element("css selector", ".key").text for p in panes]
    assert captions == ["left", "right"]
    shares = [p.find_element("css selector", ".share").text for p in panes]
    assert shares == [f"{100 * v:.1f}% of the score" for v in run.arrays["input_shares"][k, 1:]]
    left = ".run[data-run='0'] canvas.keyframe[data-key='left']"
    for norm in ("running", "frame", "episode"):
        browser.find_element("css selector", f"#norm button[data-norm='{norm}']").click()
        got = shows(browser, k, left).astype(int)
        want = expected_key_view(run, "left", k, norm).astype(int)
        assert np.abs(got - want).max() <= 3 and (got != want).mean() < 0.01, norm
        main_got = shows(browser, k).astype(int)  # the layer's key: the same scale
        main_want = expected_signed_view(run, k, norm=norm).astype(int)
        assert np.abs(main_got - main_want).max() <= 3 and (main_got != main_want).mean() < 0.01, norm
        label = browser.find_element("css selector", ".colorbar .full").text
        assert float(label.split()[0]) == pytest.approx(shared_full(run, k, norm), rel=1e-3)
    browser.find_element("id", "overlay").click()  # no maps: exactly the observation of each key
    s = page_scale(run)
    obs = run.arrays["obs_left"][k].transpose(1, 2, 0)
    np.testing.assert_array_equal(canvas(browser, left)[0], obs.repeat(s, axis=0).repeat(s, axis=1))
    # the vector key's elements: a signed bar each from the centre, scaled by the step's largest |element|
    names = [e.text for e in browser.find_elements("css selector", ".bars.elements .name")]
    assert names == ["cue[0]", "cue[1]"]
    bars = browser.execute_script(
        "return [...document.querySelectorAll('.bars.elements .fill')]"
        ".map(e => [parseFloat(e.style.left), parseFloat(e.style.width), e.classList.contains('down')])"
    )
    values = run.arrays["attr_cue"][k].astype(np.float64)
    reach = 50 * np.abs(values) / np.abs(values).max()
    np.testing.assert_allclose([b[1] for b in bars], reach, atol=1e-3)
    np.testing.assert_allclose([b[0] for b in bars], np.where(values < 0, 50 - reach, 50), atol=1e-3)
    assert [b[2] for b in bars] == list(values < 0)
    from selenium.webdriver.common.keys import Keys

    press(browser, Keys.ARROW_RIGHT)
    shows(browser, min(k + 1, FAMILY_STEPS - 1), left)
    assert console_errors(browser) == []
