"""Streaming writers for the video (MP4/GIF) and the trace (.npz), with atomic outputs.

Both writers put data in hidden temporary siblings of the output as it arrives and rename it to
the real path only in ``close()``, so a path either holds a complete file or nothing new. Used as
context managers they close on normal exit and on Ctrl-C (a shorter but valid output), and
discard everything on any other exception.

Temporaries, for an output ``dir/run.mp4`` or ``dir/run.npz``:
``dir/.run.partial.mp4`` (ffmpeg output; the real suffix comes last so ffmpeg picks the
container), ``dir/.run.partial.d/`` (one raw file per trace key) and ``dir/.run.partial.npz``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import cv2
import numpy as np
from PIL import Image

from rlcam.errors import RlcamError

__all__ = ["FrameWriter", "Trace", "TraceWriter", "load_trace"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".gif")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _partial(path: Path, suffix: str | None = None) -> Path:
    """``dir/run.mp4`` -> ``dir/.run.partial.mp4`` (hidden, same directory, same suffix)."""
    return path.with_name(f".{path.stem}.partial{path.suffix if suffix is None else suffix}")


def _check_output(path: Path, what: str) -> None:
    """Fail early, in one sentence, when ``path`` cannot become an output file."""
    if not path.parent.exists():
        raise RlcamError(f"cannot write the {what} {path}: directory {path.parent} does not exist; create it first.")
    if not path.parent.is_dir():
        raise RlcamError(f"cannot write the {what} {path}: {path.parent} is a file, not a directory.")
    if path.is_dir():
        raise RlcamError(f"cannot write the {what} {path}: it is a directory; give a file name.")


class _Atomic:
    """Context-manager protocol shared by the writers: keep on success or Ctrl-C, else discard."""

    def close(self) -> Path | None:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.close()
        else:
            self.discard()


# --- video ------------------------------------------------------------------------------------


class FrameWriter(_Atomic):
    """Stream RGB frames to an MP4 (H.264, via ffmpeg) or a GIF (Pillow).

    MP4 memory stays flat however long the video: each frame goes straight to ffmpeg's stdin.
    GIF frames are kept in memory (palettised, one byte per pixel) until ``close()``, which is
    fine for short clips; Pillow merges identical consecutive GIF frames into one longer frame.

    Frames with an odd height or width are padded with one black row/column (H.264 in yuv420p
    needs even sizes); every frame must have the size of the first one.

    Args:
        path: Output path ending in .mp4, .mkv, .mov or .gif. Its directory must exist.
        fps: Frames per second.

    Raises:
        RlcamError: The path has another suffix or cannot be written.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float = 30):
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise RlcamError(f"video path {self.path} must end in one of {', '.join(VIDEO_SUFFIXES)}.")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        _check_output(self.path, "video")
        self.fps = float(fps)
        self._gif = self.path.suffix.lower() == ".gif"
        self._tmp = _partial(self.path)
        try:
            # Creating the temporary now turns an unwritable directory into an error before the
            # run starts, rather than after the first step has been computed.
            self._tmp.open("wb").close()
        except OSError as e:
            raise RlcamError(f"cannot write the video {self.path}: {e.strerror}; choose a writable directory.") from e
        self._size: tuple[int, int] | None = None  # (H, W) after padding
        self._ffmpeg = None  # imageio-ffmpeg's frame generator, started on the first frame
        self._gif_frames: list[Image.Image] = []
        self._count = 0
        self._done = False  # closed or discarded
        self._result: Path | None = None  # what close() returned

    @property
    def frames_written(self) -> int:
        """Frames appended so far."""
        return self._count

    def append(self, frame: np.ndarray) -> None:
        """Add one frame, ``(H, W, 3)`` uint8 RGB."""
        if self._done:
            raise ValueError(f"video writer for {self.path} is already closed")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        h, w = frame.shape[:2]
        if h % 2 or w % 2:
            padded = np.zeros((h + h % 2, w + w % 2, 3), dtype=np.uint8)
            padded[:h, :w] = frame
            frame = padded
        if self._size is None:
            self._size = frame.shape[:2]
            if not self._gif:
                self._ffmpeg = self._start_ffmpeg(self._size)
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first frame's {self._size}")
        if self._gif:
            # Palettise now: a quarter of the memory of Pillow's RGB(X) frames, spread-out cost.
            self._gif_frames.append(Image.fromarray(frame).quantize(256, Image.Quantize.FASTOCTREE))
        else:
            # To ffmpeg as YUV 4:2:0 already: OpenCV's conversion (~0.7 ms for a 934x630 frame) saves
            # ffmpeg's own (~3 ms of its CPU per frame) and halves the bytes through the pipe; the
            # decoded colours match ffmpeg's conversion (BT.601, limited range) to the same error.
            self._ffmpeg.send(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YUV_I420))
        self._count += 1

    def submit(self, render, *args) -> None:
        """Append ``render(*args)`` now (``BackgroundFrames.submit`` does it on a worker thread)."""
        self.append(render(*args))

    def _start_ffmpeg(self, size_hw: tuple[int, int]):
        import imageio_ffmpeg  # deferred: only MP4 output needs the ffmpeg binary

        # "ultrafast": encoding runs beside the agent every step and was the largest cost of a
        # recorded step (scripts/benchmark.py, P2); it halves x264's CPU per frame against
        # "veryfast", at the same quality setting, for files ~2.8x larger (a few MB per 1000 steps).
        output_params = ["-preset", "ultrafast"]
        if self.path.suffix.lower() != ".mkv":
            # Index at the front, so a browser starts playing before the whole file has arrived.
            output_params += ["-movflags", "+faststart"]
        gen = imageio_ffmpeg.write_frames(
            str(self._tmp),
            (size_hw[1], size_hw[0]),
            fps=self.fps,
            codec="libx264",
            quality=7,
            pix_fmt_in="yuv420p",
            pix_fmt_out="yuv420p",
            macro_block_size=2,  # sizes are even already: no rescaling by ffmpeg
            ffmpeg_log_level="error",
            output_params=output_params,
        )
        gen.send(None)  # start the ffmpeg process
        return gen

    def close(self) -> Path | None:
        """Finish the file and move it to ``path``; a no-op after close or discard.

        Returns:
            The output path, or None when no frame was appended (then no file is written).
        """
        if self._done:
            return self._result
        self._done = True
        try:
            if self._count == 0:
                self._tmp.unlink(missing_ok=True)
                return None
            if self._gif:
                first, *rest = self._gif_frames
                self._gif_frames = []
                first.save(
                    self._tmp,
                    format="GIF",
                    save_all=True,
                    append_images=rest,
                    duration=round(1000.0 / self.fps),
                    loop=0,
                )
            else:
                self._ffmpeg.close()  # flushes and waits for ffmpeg to write the trailer
                self._ffmpeg = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self._ffmpeg = None
            self._tmp.unlink(missing_ok=True)
            raise
        self._result = self.path
        return self.path

    def discard(self) -> None:
        """Stop writing and delete the temporary file; a no-op after close."""
        if self._done:
            return
        self._done = True
        self._gif_frames = []
        if self._ffmpeg is not None:
            try:
                self._ffmpeg.close()
            except Exception:  # the file is being thrown away; ffmpeg's complaints do not matter
                pass
            self._ffmpeg = None
        self._tmp.unlink(missing_ok=True)


class BackgroundFrames(_Atomic):
    """Renders and appends frames on a worker thread, in order, for a ``FrameWriter``.

    ``submit(render, *args)`` queues ``writer.append(render(*args))`` and returns at once, so
    drawing a frame and handing it to ffmpeg (a blocking pipe write of ~1.8 MB per 3x Atari frame)
    overlap the next step's env and policy work: Pillow, numpy and the pipe release the GIL in
    their C loops. At most ``depth`` frames wait, so memory stays flat. The arguments must not be
    modified after submitting (pass copies of buffers that the caller reuses).

    A failure on the worker is raised again by the next ``submit`` or by ``close``; then nothing
    more is rendered and ``close`` leaves no file.
    """

    _STOP = object()

    def __init__(self, writer: FrameWriter, depth: int = 4):
        self.writer = writer
        self.path = writer.path
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abandon = False  # discard: skip queued jobs
        self._thread = threading.Thread(target=self._work, name="rlcam-frames", daemon=True)
        self._thread.start()

    @property
    def frames_written(self) -> int:
        return self.writer.frames_written

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is self._STOP:
                return
            if self._error is not None or self._abandon:
                continue  # drain: the producer must never block on a dead worker
            render, args = job
            try:
                self.writer.append(render(*args))
            except BaseException as e:  # handed to the main thread, which decides
                self._error = e

    def _raise_pending(self) -> None:
        # Sticky: after a failure the worker only drains, so the video would miss frames; every later
        # submit and close raise it again (close leaving no file).
        if self._error is not None:
            raise self._error

    def submit(self, render, *args) -> None:
        """Queue one frame: ``render(*args)`` returns it, ``(H, W, 3)`` uint8 RGB."""
        self._raise_pending()
        if not self._thread.is_alive():
            raise ValueError(f"video writer for {self.path} is already closed")
        self._jobs.put((render, args))

    def append(self, frame: np.ndarray) -> None:
        """Queue a frame already drawn."""
        self.submit(np.asarray, frame)

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(self._STOP)
            self._thread.join()

    def close(self) -> Path | None:
        """Render what is queued, then finish the file (``FrameWriter.close``)."""
        self._finish()
        if self._error is not None:
            self.writer.discard()
            self._raise_pending()
        return self.writer.close()

    def discard(self) -> None:
        """Drop what is queued and delete the temporary file."""
        self._abandon = True
        self._finish()
        self.writer.discard()


# --- trace ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    """One trace key: its per-step shape and dtype, and the raw file its bytes go to."""

    shape: tuple[int, ...]
    dtype: np.dtype
    raw: Path
    file: BinaryIO


class TraceWriter(_Atomic):
    """Stream per-step arrays to an ``.npz`` trace with flat memory.

    Each ``append`` writes its arrays' bytes to one raw file per key beside the output; ``close``
    assembles a standard npz (uncompressed zip of ``.npy`` members) in which every key holds the
    steps stacked as ``(T, *per_step_shape)``, plus ``meta``: a 0-d unicode array of JSON.

    Args:
        path: Output path ending in .npz. Its directory must exist.
        meta: JSON-serialisable run description, stored under the key ``meta``.

    Raises:
        RlcamError: The path has another suffix or cannot be written.
    """

    def __init__(self, path: str | os.PathLike[str], meta: Mapping[str, Any]):
        self.path = Path(path)
        if self.path.suffix.lower() != ".npz":
            raise RlcamError(f"trace path {self.path} must end in .npz.")
        _check_output(self.path, "trace")
        self.meta = dict(meta)
        json.dumps(self.meta)  # fail now, not after the run, if meta is not JSON-serialisable
        self._tmp = _partial(self.path)
        self._raw_dir = _partial(self.path, ".d")
        try:
            shutil.rmtree(self._raw_dir, ignore_errors=True)  # left over by a killed run
            self._raw_dir.mkdir()
        except OSError as e:
            raise RlcamError(f"cannot write the trace {self.path}: {e.strerror}; choose a writable directory.") from e
        self._columns: dict[str, _Column] = {}
        self._steps = 0
        self._done = False  # closed or discarded
        self._result: Path | None = None  # what close() returned

    @property
    def steps(self) -> int:
        """Steps appended so far."""
        return self._steps

    def set_meta(self, **fields: Any) -> None:
        """Add fields to ``meta`` while writing (e.g. what is only known after the first step).

        Raises:
            ValueError: A field is not JSON-serialisable.
        """
        json.dumps(fields)
        self.meta.update(fields)

    def append(self, **arrays: Any) -> None:
        """Add one step: the same keys, per-step shapes and dtypes every time.

        Args:
            **arrays: Key -> array-like, e.g. ``cam=(h, w) float32``, ``action=() int64``, or with
                an env axis ``(n, ...)``. Keys are identifiers other than ``meta``.

        Raises:
            ValueError: A key, shape or dtype differs from the first step, or is not storable.
        """
        if self._done:
            raise ValueError(f"trace writer for {self.path} is already closed")
        if not arrays:
            raise ValueError("append needs at least one array")
        values = {key: np.asarray(value) for key, value in arrays.items()}
        if not self._columns:
            self._open_columns(values)
        elif values.keys() != self._columns.keys():
            missing = sorted(self._columns.keys() - values.keys())
            extra = sorted(values.keys() - self._columns.keys())
            raise ValueError(
                f"trace step {self._steps} keys differ from the first step: missing {missing}, extra {extra}"
            )
        # Check everything before writing anything, so a bad step leaves the files aligned.
        for key, value in values.items():
            col = self._columns[key]
            if value.shape != col.shape or value.dtype != col.dtype:
                raise ValueError(
                    f"trace key {key!r} at step {self._steps} is {value.shape} {value.dtype}, "
                    f"but the first step had {col.shape} {col.dtype}"
                )
        for key, value in values.items():
            self._columns[key].file.write(np.ascontiguousarray(value).tobytes())
        self._steps += 1

    def _open_columns(self, values: dict[str, np.ndarray]) -> None:
        for key, value in values.items():
            if not _KEY.match(key) or key == "meta":
                raise ValueError(f"trace key {key!r} must be an identifier other than 'meta'")
            if value.dtype.hasobject:
                raise ValueError(f"trace key {key!r} has dtype {value.dtype}, which npz cannot store without pickle")
        for key, value in values.items():
            raw = self._raw_dir / f"{key}.raw"
            self._columns[key] = _Column(value.shape, value.dtype, raw, raw.open("wb"))

    def close(self, extra_meta: Mapping[str, Any] | None = None) -> Path | None:
        """Write the npz and move it to ``path``; a no-op after close or discard.

        Args:
            extra_meta: Fields merged into ``meta`` first, e.g. steps done or an interrupted flag.

        Returns:
            The output path (None if the writer was discarded).
        """
        if self._done:
            return self._result
        self._done = True
        meta = {**self.meta, **(extra_meta or {})}
        try:
            for col in self._columns.values():
                col.file.close()
            self._assemble(json.dumps(meta))
            os.replace(self._tmp, self.path)
        except BaseException:
            self._cleanup()
            raise
        self.meta = meta
        self._result = self.path
        self._cleanup()
        return self.path

    def _assemble(self, meta_json: str) -> None:
        """Write the temporary npz: each member is a ``.npy`` header followed by the raw bytes."""
        # ZIP_STORED like numpy's savez: no compression cost, and members stay memory-mappable.
        with zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("meta.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.array(meta_json), allow_pickle=False)
            for key, col in self._columns.items():
                header = {
                    "descr": np.lib.format.dtype_to_descr(col.dtype),
                    "fortran_order": False,
                    "shape": (self._steps, *col.shape),
                }
                with zf.open(f"{key}.npy", "w", force_zip64=True) as out:
                    try:
                        np.lib.format.write_array_header_1_0(out, header)
                    except ValueError:  # header over 64 KiB (absurd shapes); version 2.0 allows more
                        np.lib.format.write_array_header_2_0(out, header)
                    with col.raw.open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)

    def discard(self) -> None:
        """Stop writing and delete all temporaries; a no-op after close."""
        if self._done:
            return
        self._done = True
        self._cleanup()

    def _cleanup(self) -> None:
        for col in self._columns.values():
            col.file.close()
        shutil.rmtree(self._raw_dir, ignore_errors=True)
        self._tmp.unlink(missing_ok=True)


@dataclass
class Trace:
    """A loaded trace: the stacked per-step arrays and the parsed ``meta``.

    Indexable like the npz it came from: ``trace["cam"]`` is ``(T, ...)``.
    """

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: object) -> bool:
        return key in self.arrays

    def keys(self):
        return self.arrays.keys()

    @property
    def steps(self) -> int:
        """Number of steps T (0 for a trace without arrays)."""
        return next((len(a) for a in self.arrays.values()), 0)


# ``cam_input`` is ``cam`` placed on the input grid (``Ry @ cam @ Rx^T``): 28 KB a step for an
# 84x84 input against 196 bytes for a 7x7 ``cam``, so the recorder stores the placement matrices in
# meta under this name instead, and ``load_trace`` rebuilds ``cam_input``.
PLACEMENT_META = "cam_input_placement"


def placement_meta(to_input_y: np.ndarray, to_input_x: np.ndarray) -> dict[str, list]:
    """The meta entry from which ``load_trace`` rebuilds ``cam_input`` (JSON keeps float64 exactly)."""
    return {"y": np.asarray(to_input_y, np.float64).tolist(), "x": np.asarray(to_input_x, np.float64).tolist()}


def _rebuild(cam: np.ndarray, entry: Any) -> np.ndarray:
    """``cam (..., h, w)`` on the input grid ``(..., H, W)`` float32, as the explainer placed it."""
    ry = np.asarray(entry["y"], dtype=np.float32)
    rx = np.asarray(entry["x"], dtype=np.float32)
    if ry.ndim != 2 or rx.ndim != 2 or ry.shape[1] != cam.shape[-2] or rx.shape[1] != cam.shape[-1]:
        raise ValueError(f"placement {ry.shape} x {rx.shape} does not fit maps {cam.shape[-2:]}")
    return np.ascontiguousarray(ry @ cam.astype(np.float32) @ rx.T)


def load_trace(path: str | os.PathLike[str], keys: list[str] | None = None) -> Trace:
    """Read a trace written by :class:`TraceWriter`.

    ``cam_input``, which the recorder leaves out (it stores the placement in meta), is rebuilt
    from ``cam``, so it loads like a stored key; a stored ``cam_input`` (older traces) is read as is.

    Args:
        path: The ``.npz`` file.
        keys: Arrays to load (all if None); ``meta`` is always read.

    Raises:
        RlcamError: The file is missing, not a complete zip, not an rlcam trace, or lacks a key.
    """
    p = Path(path)
    if not p.is_file():
        raise RlcamError(f"trace {p} does not exist; check the path or record it first.")
    corrupt = f"trace {p} is not a valid rlcam trace (truncated or corrupt zip); record it again."
    if not zipfile.is_zipfile(p):
        raise RlcamError(corrupt)
    try:
        with np.load(p, allow_pickle=False) as npz:
            if "meta" not in npz.files:
                raise RlcamError(f"trace {p} has no 'meta' entry, so rlcam did not write it; record it again.")
            meta = _read_meta(p, npz["meta"])
            stored = [k for k in npz.files if k != "meta"]
            rebuilt = "cam_input" not in stored and "cam" in stored and PLACEMENT_META in meta
            names = stored + (["cam_input"] if rebuilt else [])
            if keys is not None:
                absent = [k for k in keys if k not in names]
                if absent:
                    raise RlcamError(f"trace {p} has no {', '.join(absent)} (it has {', '.join(names)}).")
                names = list(keys)
            rebuilt = rebuilt and "cam_input" in names
            arrays = {k: npz[k] for k in names if k != "cam_input" or not rebuilt}
            cam = None
            if rebuilt:  # read here, inside the open file, even when only cam_input is asked for
                cam = arrays["cam"] if "cam" in arrays else npz["cam"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise RlcamError(corrupt) from e
    if rebuilt:
        try:
            arrays["cam_input"] = _rebuild(cam, meta[PLACEMENT_META])
        except (ValueError, TypeError, KeyError) as e:
            raise RlcamError(f"trace {p} has an unreadable placement in 'meta' ({e}); record it again.") from e
        arrays = {k: arrays[k] for k in names}  # in the order asked for
    if len({len(a) if a.ndim else -1 for a in arrays.values()}) > 1:
        raise RlcamError(f"trace {p} has arrays of different lengths, so it is corrupt; record it again.")
    return Trace(arrays, meta)


def _read_meta(p: Path, meta_array: np.ndarray) -> dict[str, Any]:
    try:
        if meta_array.ndim != 0 or meta_array.dtype.kind != "U":
            raise ValueError("meta is not a 0-d string")
        meta = json.loads(str(meta_array[()]))
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
    except ValueError as e:
        raise RlcamError(f"trace {p} has an unreadable 'meta' entry ({e}); record it again.") from e
    return meta
