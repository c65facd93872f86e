# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Frame sampling speed: `slowfast_hf.video_reading.read_video` vs Transformers' PyAV loader vs a full sequential decode.

The video (written once, cached in `benchmarks/out/`): 10 minutes of 640x360 H.264 at 30 fps (18,000 frames) with a
keyframe every 2 s (a common streaming setting), smooth moving content (a scrolling colour pattern), libx264
`ultrafast`, CRF 28.

Each row samples N frames evenly (`num_frames=N`) and reports the median wall time and CPU time (all threads) over
`--repeats` runs, the methods taking turns so that changes in machine load hit them alike:
  - `read_video`: our reader, exact (seeks to the keyframe before each requested frame and decodes forward);
  - `read_video approx.`: our reader with `approximate=True` (nearest keyframes, decoding keyframes only);
  - `transformers`: `transformers.video_utils.load_video(path, num_frames=N, backend="pyav")`;
  - `full decode`: decode every frame in order with PyAV (frame threading on) and keep the N wanted ones.
`vs transformers` is the speed-up over Transformers' loader. `same frames` compares each method's frame timestamps
with Transformers' (`VideoMetadata.timestamps`, i.e. frame index / fps): yes if all are within half a frame interval,
else the largest difference; for our exact reader it also checks that the RGB pixels are identical.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/video_decode.py                 # 16, 64 and 256 frames, 5 repeats
    HF_HUB_OFFLINE=1 python benchmarks/video_decode.py --frames 64 --repeats 1
"""

import argparse
import statistics
import time
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from transformers.video_utils import VideoMetadata, default_sample_indices_fn, load_video

from slowfast_hf.video_reading import probe_video, read_video

OUT_DIR = Path(__file__).parent / "out"
VIDEO_PATH = OUT_DIR / "video_decode_640x360_30fps_10min_gop2s.mp4"
WIDTH, HEIGHT, FPS, SECONDS, KEYFRAME_INTERVAL_S = 640, 360, 30, 600, 2


def write_benchmark_video(path: Path) -> None:
    """Encodes the benchmark video to `path` (through a temporary file, so an interrupted run leaves nothing)."""
    # A smooth colour pattern three frames wide, scrolled 2 pixels per frame: (H, 3 W, 3) uint8.
    x = np.arange(3 * WIDTH)[None, :]
    y = np.arange(HEIGHT)[:, None]
    pattern = np.stack(
        [
            128 + 100 * np.sin(x / 60 + y / 90),
            128 + 100 * np.sin(x / 45 - y / 70),
            128 + 100 * np.cos(x / 80 + y / 50),
        ],
        axis=-1,
    ).astype(np.uint8)
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        keyframe_interval = str(KEYFRAME_INTERVAL_S * FPS)
        stream.options = {
            "preset": "ultrafast",
            "crf": "28",
            "g": keyframe_interval,
            "keyint_min": keyframe_interval,
            "sc_threshold": "0",
        }
        stream.thread_type = "AUTO"
        for index in range(FPS * SECONDS):
            offset = (2 * index) % (2 * WIDTH)
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(pattern[:, offset : offset + WIDTH]), format="rgb24"
            )
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    partial.rename(path)


def full_decode(path: Path, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decodes every frame of `path` in order and keeps those at `indices`: (N, H, W, 3) RGB and (N,) seconds."""
    wanted = set(indices.tolist())
    frames, timestamps = [], []
    reformatter = VideoReformatter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frames.append(reformatter.reformat(frame, format="rgb24").to_ndarray())
                timestamps.append(float(frame.time))
    return np.stack(frames), np.array(timestamps)


def time_round_robin(functions: dict, repeats: int) -> dict:
    """
    Runs each of `functions` (name -> callable) once untimed, then `repeats` timed rounds of one call each, in turn,
    so that changes in machine load hit them alike. Returns name -> (median wall s, median CPU s, last result); CPU
    time counts every thread of the process.
    """
    results = {name: function() for name, function in functions.items()}
    wall_times, cpu_times = {name: [] for name in functions}, {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            results[name] = function()
            wall_times[name].append(time.perf_counter() - wall_start)
            cpu_times[name].append(time.process_time() - cpu_start)
    return {
        name: (statistics.median(wall_times[name]), statistics.median(cpu_times[name]), results[name])
        for name in functions
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256], help="frame counts to sample")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    args = parser.parse_args()

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if not VIDEO_PATH.exists():
        print(f"Writing {VIDEO_PATH} (once) ...", flush=True)
        start = time.perf_counter()
        write_benchmark_video(VIDEO_PATH)
        print(f"  written in {time.perf_counter() - start:.1f} s", flush=True)
    info = probe_video(VIDEO_PATH)
    print(
        f"{VIDEO_PATH.name}: {info.width}x{info.height}, {info.num_frames} frames, {info.duration:.1f} s at "
        f"{info.average_fps:g} fps, {info.codec}, {VIDEO_PATH.stat().st_size / 1e6:.1f} MB; "
        f"median of {args.repeats} round-robin runs"
    )

    info_metadata = VideoMetadata(total_num_frames=info.num_frames, fps=info.average_fps)
    half_frame = 0.5 / info.average_fps
    header = f"{'frames':>6} | {'method':<19} | {'median s':>8} | {'CPU s':>6} | {'vs transformers':>15} | same frames"
    print(header)
    print("-" * len(header))
    for num_frames in args.frames:
        # The frames Transformers' loader picks, for the full decode to keep.
        indices = default_sample_indices_fn(info_metadata, num_frames=num_frames)
        timings = time_round_robin(
            {
                "read_video": lambda: read_video(VIDEO_PATH, num_frames=num_frames),
                "read_video approx.": lambda: read_video(VIDEO_PATH, num_frames=num_frames, approximate=True),
                "transformers": lambda: load_video(str(VIDEO_PATH), num_frames=num_frames, backend="pyav"),
                "full decode": lambda: full_decode(VIDEO_PATH, indices),
            },
            args.repeats,
        )
        transformers_frames, metadata = timings["transformers"][2]
        reference = np.asarray(metadata.timestamps)  # (N,) frame index / fps

        def agreement(timestamps: np.ndarray, frames: np.ndarray | None = None) -> str:
            if len(timestamps) != len(reference):
                return f"no ({len(timestamps)} frames, not {len(reference)})"
            largest = float(np.max(np.abs(timestamps - info.start_time - reference)))
            if largest >= half_frame:
                return f"no (up to {largest:.2f} s apart)"
            if frames is not None and not np.array_equal(frames, transformers_frames):
                return "timestamps yes, pixels differ"
            return "yes" if frames is None else "yes (pixels identical)"

        exact, approx = timings["read_video"][2], timings["read_video approx."][2]
        same_frames = {
            "read_video": agreement(exact.timestamps, exact.frames),
            "read_video approx.": agreement(approx.timestamps),
            "transformers": "(reference)",
            "full decode": agreement(timings["full decode"][2][1]),
        }
        transformers_time = timings["transformers"][0]
        for method, (wall, cpu, _) in timings.items():
            print(
                f"{num_frames:>6} | {method:<19} | {wall:>8.3f} | {cpu:>6.2f} | {transformers_time / wall:>14.1f}x | "
                f"{same_frames[method]}"
            )
        print(
            f"{'':>6} | read_video decoded {exact.num_decoded_frames} frames (approx.: {approx.num_decoded_frames}) "
            f"of {info.num_frames}"
        )


if __name__ == "__main__":
    main()
