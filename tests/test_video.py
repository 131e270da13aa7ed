"""Video and trace writers: round trips, atomic outputs, Ctrl-C and error handling."""

from __future__ import annotations

import json
import os
import zipfile

import imageio.v2 as iio
import numpy as np
import pytest
from imageio_ffmpeg import count_frames_and_secs
from PIL import Image

from rlcam.errors import RlcamError
from rlcam.video import BackgroundFrames, FrameWriter, Trace, TraceWriter, load_trace, placement_meta

N = 12


def _frames(n: int = N, h: int = 64, w: int = 96) -> list[np.ndarray]:
    """Smooth frames with a moving block: easy on H.264, so the decoded video stays close."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        f = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 40)], axis=-1).astype(np.uint8)
        f[16:40, 4 + 6 * i : 28 + 6 * i] = (240, 220, 30)
        frames.append(f)
    return frames


def _listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


# --- FrameWriter ------------------------------------------------------------------------------


def test_mp4_round_trip(tmp_path):
    path = tmp_path / "run.mp4"
    frames = _frames()
    with FrameWriter(path, fps=30) as video:
        assert (tmp_path / ".run.partial.mp4").exists() and not path.exists()
        for f in frames:
            video.append(f)
        assert video.frames_written == N
    assert _listing(tmp_path) == ["run.mp4"]  # the temporary is renamed, not copied
    assert count_frames_and_secs(str(path))[0] == N
    with iio.get_reader(path, format="FFMPEG") as reader:
        first = reader.get_data(0)
    assert first.shape == frames[0].shape
    assert np.abs(first.astype(int) - frames[0]).mean() < 4.0


def test_mp4_odd_frames_are_padded_and_sizes_must_match(tmp_path):
    path = tmp_path / "odd.mp4"
    with FrameWriter(path) as video:
        video.append(_frames(1, 63, 95)[0])
        with pytest.raises(ValueError):
            video.append(_frames(1, 64, 64)[0])
        with pytest.raises(ValueError):
            video.append(np.zeros((63, 95, 3), dtype=np.float32))
        video.append(_frames(1, 63, 95)[0])
    with iio.get_reader(path, format="FFMPEG") as reader:
        assert reader.get_data(0).shape == (64, 96, 3)
    assert count_frames_and_secs(str(path))[0] == 2


def test_discard_leaves_nothing(tmp_path):
    video = FrameWriter(tmp_path / "run.mp4")
    for f in _frames(3):
        video.append(f)
    video.discard()
    assert _listing(tmp_path) == []
    video.close()  # no-op after discard
    assert _listing(tmp_path) == []


def test_ctrl_c_keeps_a_valid_shorter_video(tmp_path):
    path = tmp_path / "run.mp4"
    with pytest.raises(KeyboardInterrupt):
        with FrameWriter(path) as video:
            for i, f in enumerate(_frames()):
                if i == 5:
                    raise KeyboardInterrupt
                video.append(f)
    assert _listing(tmp_path) == ["run.mp4"]
    assert count_frames_and_secs(str(path))[0] == 5


def test_exception_leaves_no_video(tmp_path):
    with pytest.raises(RuntimeError):
        with FrameWriter(tmp_path / "run.mp4") as video:
            for f in _frames(4):
                video.append(f)
            raise RuntimeError("boom")
    assert _listing(tmp_path) == []


def _decoded(path) -> list[np.ndarray]:
    with iio.get_reader(path, format="FFMPEG") as reader:
        return [frame for frame in reader]


def test_background_frames_equal_frames_written_in_line(tmp_path):
    """Rendering on the worker thread changes nothing in the file: same frames, same order."""
    frames = _frames()
    with FrameWriter(tmp_path / "direct.mp4") as video:
        for f in frames:
            video.submit(np.flipud, f)
    with BackgroundFrames(FrameWriter(tmp_path / "threaded.mp4"), depth=2) as video:
        for f in frames:
            video.submit(np.flipud, f)
    assert video.frames_written == N
    direct, threaded = _decoded(tmp_path / "direct.mp4"), _decoded(tmp_path / "threaded.mp4")
    assert len(direct) == len(threaded) == N
    for a, b in zip(direct, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.abs(threaded[3].astype(int) - np.flipud(frames[3])).mean() < 4.0  # rendered, not raw


def test_background_failure_is_raised_in_the_caller_and_leaves_no_video(tmp_path):
    def render(frame, i):
        if i == 3:
            raise ValueError("render failed")
        return frame

    with pytest.raises(ValueError, match="render failed"):
        with BackgroundFrames(FrameWriter(tmp_path / "run.mp4"), depth=1) as video:
            for i, f in enumerate(_frames()):  # the failure surfaces at a later submit or at close
                video.submit(render, f, i)
    assert _listing(tmp_path) == []


def test_background_failure_stays_raised_even_if_the_caller_goes_on(tmp_path):
    video = BackgroundFrames(FrameWriter(tmp_path / "run.mp4"), depth=1)
    video.submit(lambda: (_ for _ in ()).throw(ValueError("render failed")))
    frames = _frames(6)
    raised = 0
    for f in frames:  # a caller that ignores the error must not get a video with a hole in it
        try:
            video.submit(np.asarray, f)
        except ValueError:
            raised += 1
    assert raised >= 4  # the first submits may run before the worker has failed
    with pytest.raises(ValueError, match="render failed"):
        video.close()
    assert _listing(tmp_path) == []


def test_background_ctrl_c_keeps_what_was_submitted(tmp_path):
    path = tmp_path / "run.mp4"
    with pytest.raises(KeyboardInterrupt):
        with BackgroundFrames(FrameWriter(path)) as video:
            for i, f in enumerate(_frames()):
                if i == 7:
                    raise KeyboardInterrupt
                video.submit(np.asarray, f)
    assert _listing(tmp_path) == ["run.mp4"]
    assert count_frames_and_secs(str(path))[0] == 7


def test_background_discard_leaves_nothing(tmp_path):
    video = BackgroundFrames(FrameWriter(tmp_path / "run.mp4"))
    for f in _frames(5):
        video.append(f)
    video.discard()
    assert _listing(tmp_path) == []
    with pytest.raises(ValueError, match="closed"):
        video.append(_frames(1)[0])


def test_failed_run_keeps_the_previous_file(tmp_path):
    path = tmp_path / "run.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with FrameWriter(path) as video:
            video.append(_frames(1)[0])
            raise RuntimeError("boom")
    assert path.read_bytes() == b"previous"


def test_no_frames_writes_no_file(tmp_path):
    with FrameWriter(tmp_path / "run.mp4") as video:
        pass
    assert video.close() is None
    assert _listing(tmp_path) == []


def test_gif_round_trip(tmp_path):
    path = tmp_path / "clip.gif"
    frames = _frames(6)
    with FrameWriter(path, fps=10) as video:
        for f in frames:
            video.append(f)
    assert _listing(tmp_path) == ["clip.gif"]
    with Image.open(path) as gif:
        assert gif.n_frames == 6
        first = np.asarray(gif.convert("RGB"))
        assert gif.info["duration"] == 100
    assert np.abs(first.astype(int) - frames[0]).mean() < 6.0


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing/run.mp4", "does not exist"),
        ("file.txt/run.mp4", "not a directory"),
        ("run.avi", "must end in"),
        ("folder.mp4", "is a directory"),
    ],
)
def test_unwritable_or_bad_video_path_raises_rlcam_error(tmp_path, name, message):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(RlcamError, match=message) as caught:
        FrameWriter(tmp_path / name)
    assert str(tmp_path / name) in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_raises_rlcam_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(RlcamError, match="run.mp4"):
            FrameWriter(tmp_path / "run.mp4")
        with pytest.raises(RlcamError, match="run.npz"):
            TraceWriter(tmp_path / "run.npz", {})
    finally:
        tmp_path.chmod(0o700)


# --- TraceWriter / load_trace -----------------------------------------------------------------


def _steps(t: int, n: int | None = None, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    lead = () if n is None else (n,)
    return [
        dict(
            cam=rng.random((*lead, 7, 7), dtype=np.float32),
            cam_input=rng.random((*lead, 84, 84)).astype(np.float16),
            action=rng.integers(0, 4, lead).astype(np.int64) if lead else np.int64(rng.integers(0, 4)),
            score=np.asarray(rng.normal(size=lead), dtype=np.float32),
            done=np.asarray(rng.random(lead) < 0.2),
            obs=rng.integers(0, 256, (*lead, 4, 84, 84), dtype=np.uint8),
        )
        for _ in range(t)
    ]


@pytest.mark.parametrize("n_envs", [None, 2])
def test_trace_round_trip_is_exact(tmp_path, n_envs):
    path = tmp_path / "run.npz"
    steps = _steps(9, n_envs)
    meta = {"env_id": "BreakoutNoFrameskip-v4", "action_names": ["NOOP", "FIRE"], "seed": 0}
    with TraceWriter(path, meta) as trace:
        for step in steps:
            trace.append(**step)
        assert trace.steps == 9
        trace.close(extra_meta={"steps": 9, "interrupted": False})
    assert _listing(tmp_path) == ["run.npz"]

    loaded = load_trace(path)
    assert isinstance(loaded, Trace) and loaded.steps == 9
    assert loaded.meta == {**meta, "steps": 9, "interrupted": False}
    assert set(loaded.keys()) == set(steps[0])
    for key in steps[0]:
        expected = np.stack([np.asarray(s[key]) for s in steps])
        assert loaded[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(loaded[key], expected)

    # A plain numpy reader sees a standard npz, no pickle needed.
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {*steps[0], "meta"}
        assert json.loads(str(npz["meta"][()]))["seed"] == 0
        assert npz["cam"].shape == (9, *(() if n_envs is None else (2,)), 7, 7)
    assert set(load_trace(path, keys=["cam"]).keys()) == {"cam"}


def test_trace_streams_to_disk(tmp_path):
    raw = tmp_path / ".run.partial.d" / "obs.raw"
    with TraceWriter(tmp_path / "run.npz", {}) as trace:
        for i, step in enumerate(_steps(6)):
            trace.append(**step)
            # Each obs is 28 KB, more than the file buffer: the bytes are on disk, not in memory.
            assert raw.stat().st_size >= (i + 1) * 4 * 84 * 84 - 8192
    assert not raw.parent.exists()


def test_trace_rejects_inconsistent_steps_and_stays_aligned(tmp_path):
    path = tmp_path / "run.npz"
    good = _steps(3)
    with TraceWriter(path, {}) as trace:
        trace.append(**good[0])
        with pytest.raises(ValueError, match="cam"):
            trace.append(**{**good[1], "cam": np.zeros((8, 8), dtype=np.float32)})
        with pytest.raises(ValueError, match="score"):
            trace.append(**{**good[1], "score": np.float64(1.0)})
        with pytest.raises(ValueError, match="missing"):
            trace.append(cam=good[1]["cam"])
        trace.append(**good[2])
    loaded = load_trace(path)
    assert loaded.steps == 2
    np.testing.assert_array_equal(loaded["obs"], np.stack([good[0]["obs"], good[2]["obs"]]))


@pytest.mark.parametrize("arrays", [{"meta": np.zeros(2)}, {"bad key": np.zeros(2)}, {"x": np.array([{}])}])
def test_trace_rejects_bad_keys_and_object_arrays(tmp_path, arrays):
    with TraceWriter(tmp_path / "run.npz", {}) as trace:
        with pytest.raises(ValueError):
            trace.append(**arrays)


def test_trace_meta_must_be_json(tmp_path):
    with pytest.raises(TypeError):
        TraceWriter(tmp_path / "run.npz", {"x": object()})


def test_trace_exception_leaves_nothing_and_ctrl_c_keeps_steps(tmp_path):
    with pytest.raises(RuntimeError):
        with TraceWriter(tmp_path / "a.npz", {}) as trace:
            trace.append(**_steps(1)[0])
            raise RuntimeError("boom")
    assert _listing(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with TraceWriter(tmp_path / "b.npz", {"k": 1}) as trace:
            for step in _steps(4):
                trace.append(**step)
            raise KeyboardInterrupt
    assert _listing(tmp_path) == ["b.npz"]
    assert load_trace(tmp_path / "b.npz").steps == 4


def test_trace_without_steps_holds_only_meta(tmp_path):
    with TraceWriter(tmp_path / "run.npz", {"k": 1}):
        pass
    loaded = load_trace(tmp_path / "run.npz")
    assert loaded.meta == {"k": 1} and loaded.steps == 0 and not loaded.arrays


@pytest.fixture
def valid_trace(tmp_path):
    path = tmp_path / "good.npz"
    with TraceWriter(path, {"k": 1}) as trace:
        for step in _steps(5):
            trace.append(**step)
    return path


def test_load_trace_rejects_truncated_and_garbage_files(tmp_path, valid_trace):
    data = valid_trace.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for path in (truncated, garbage):
        with pytest.raises(RlcamError, match="not a valid rlcam trace"):
            load_trace(path)
    with pytest.raises(RlcamError, match="does not exist"):
        load_trace(tmp_path / "missing.npz")


def test_load_trace_rejects_corrupt_member_data(tmp_path, valid_trace):
    data = bytearray(valid_trace.read_bytes())
    with zipfile.ZipFile(valid_trace) as zf:
        info = zf.getinfo("obs.npy")
    # Flip bytes inside obs's stored data (past its local header): the CRC check must catch it.
    at = info.header_offset + 200 + info.compress_size // 2
    data[at : at + 16] = bytes(255 - b for b in data[at : at + 16])
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(RlcamError, match="not a valid rlcam trace"):
        load_trace(corrupt)


def test_load_trace_rejects_npz_without_meta_and_unknown_keys(tmp_path, valid_trace):
    plain = tmp_path / "plain.npz"
    np.savez(plain, cam=np.zeros((3, 7, 7)))
    with pytest.raises(RlcamError, match="meta"):
        load_trace(plain)
    with pytest.raises(RlcamError, match="nope"):
        load_trace(valid_trace, keys=["nope"])


def _cam_trace(path, placement=None, cam_input=None, n_envs=None):
    """A trace of 4 steps of 3x2 maps; placement in meta (set while writing) and/or stored cam_input."""
    rng = np.random.default_rng(1)
    shape = (3, 2) if n_envs is None else (n_envs, 3, 2)
    cams = rng.random((4, *shape), dtype=np.float32)
    with TraceWriter(path, {"k": 1}) as trace:
        if placement is not None:
            trace.set_meta(cam_input_placement=placement)
        for t in range(4):
            row = dict(cam=cams[t], action=np.int64(t))
            if cam_input is not None:
                row["cam_input"] = cam_input[t]
            trace.append(**row)
    return cams


@pytest.mark.parametrize("n_envs", [None, 2])
def test_load_trace_rebuilds_cam_input_from_cam_and_the_placement(tmp_path, n_envs):
    ry = np.array([[1.0, 0, 0], [0.25, 0.75, 0], [0, 0.5, 0.5], [0, 0, 1.0], [0, 0, 1.0]])  # 5 x 3
    rx = np.array([[1.0, 0], [1 / 3, 2 / 3], [0, 1.0], [0, 1.0]])  # 4 x 2
    path = tmp_path / "run.npz"
    cams = _cam_trace(path, placement_meta(ry, rx), n_envs=n_envs)
    expected = np.einsum("Hh,...hw,Ww->...HW", ry, cams.astype(np.float64), rx)  # independent: float64 einsum
    loaded = load_trace(path)
    assert loaded["cam_input"].dtype == np.float32 and loaded["cam_input"].shape == expected.shape
    np.testing.assert_allclose(loaded["cam_input"], expected, rtol=1e-6)
    assert loaded.meta["k"] == 1 and set(loaded.keys()) == {"cam", "action", "cam_input"}
    only = load_trace(path, keys=["cam_input"])  # cam is read to rebuild it, but not returned
    assert list(only.keys()) == ["cam_input"]
    np.testing.assert_array_equal(only["cam_input"], loaded["cam_input"])


def test_load_trace_prefers_a_stored_cam_input_and_rejects_a_bad_placement(tmp_path):
    stored = np.full((4, 5, 4), 7.0, np.float32)  # deliberately not the placement of cam
    _cam_trace(tmp_path / "both.npz", placement_meta(np.ones((5, 3)), np.ones((4, 2))), cam_input=stored)
    np.testing.assert_array_equal(load_trace(tmp_path / "both.npz")["cam_input"], stored)
    _cam_trace(tmp_path / "bad.npz", placement_meta(np.ones((5, 9)), np.ones((4, 2))))  # 9 columns, maps 3 rows
    with pytest.raises(RlcamError, match="placement"):
        load_trace(tmp_path / "bad.npz")
    _cam_trace(tmp_path / "none.npz")  # no placement and no stored cam_input: the key does not exist
    assert "cam_input" not in load_trace(tmp_path / "none.npz")
    with pytest.raises(RlcamError, match="has no cam_input"):
        load_trace(tmp_path / "none.npz", keys=["cam_input"])


@pytest.mark.parametrize("name", ["missing/run.npz", "file.txt/run.npz", "run.zip"])
def test_unwritable_or_bad_trace_path_raises_rlcam_error(tmp_path, name):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(RlcamError):
        TraceWriter(tmp_path / name, {})
