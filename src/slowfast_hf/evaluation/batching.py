# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
lmms-eval requests as batches: each request's visuals, batches that keep the questions about one video together, the
videos read one batch ahead in a background thread, and the record of requests that failed.
"""

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EvalRequest:
    """
    One lmms-eval request, unpacked.

    position (`int`): its index in the list lmms-eval passed (answers go back in that order).
    task, split (`str`), doc_id (`int`): the document it asks about (`None` for lmms-eval's context-free
        loglikelihood requests).
    context (`str`): the question as the task rendered it.
    visuals (`tuple`): video paths (`str`) and still images (PIL), in the order the task gave them.
    payload: `generate_until`: the task's generation kwargs (`dict`); `loglikelihood`: the continuation (`str`).
    source: the lmms-eval `Instance`.
    """

    position: int
    task: str | None
    split: str | None
    doc_id: int | None
    context: str
    visuals: tuple
    payload: Any
    source: Any

    @property
    def videos(self) -> tuple[str, ...]:
        return tuple(visual for visual in self.visuals if isinstance(visual, str))

    def describe(self) -> str:
        where = f"task {self.task!r}, doc {self.doc_id}" if self.task is not None else "a context-free request"
        return f"{where} (videos {list(self.videos)})" if self.videos else where


@dataclass(frozen=True)
class EvalFailure:
    """A request that could not be answered, recorded instead of raised (`record_failures=True`)."""

    task: str | None
    doc_id: int | None
    videos: tuple[str, ...]
    stage: str  # "read video", "encode video", "generate" or "loglikelihood"
    error: str


def visuals_of(doc_to_visual: Callable | None, doc, describe: str) -> tuple:
    """The task's visuals for `doc`, flattened one level: video paths as `str`, still images as PIL images."""
    if doc_to_visual is None:
        return ()
    try:
        visuals = doc_to_visual(doc)
    except Exception as error:
        raise RuntimeError(f"The task's doc_to_visual failed for {describe}: {error}") from error
    if visuals is None:
        return ()
    if not isinstance(visuals, (list, tuple)):
        visuals = [visuals]
    flat = []
    for visual in visuals:
        flat.extend(visual if isinstance(visual, (list, tuple)) else [visual])
    result = []
    for visual in flat:
        if isinstance(visual, (str, os.PathLike)):
            result.append(os.fspath(visual))
        elif hasattr(visual, "getbands"):  # a PIL image
            result.append(visual)
        else:
            raise TypeError(
                f"{describe}: doc_to_visual gave a {type(visual).__name__}; expected video paths or PIL images."
            )
    return tuple(result)


def plan_batches(requests: Sequence[EvalRequest], batch_size: int, group_key: Callable) -> list[list[EvalRequest]]:
    """Batches of at most `batch_size` requests, each batch within one `group_key` (e.g. one set of generation
    kwargs); within a group the requests are sorted by their videos, so the questions about one video sit together."""
    groups: dict[Any, list[EvalRequest]] = {}
    for request in requests:
        groups.setdefault(group_key(request), []).append(request)
    batches = []
    for members in groups.values():
        members = sorted(members, key=lambda request: (request.videos, request.position))
        batches += [members[start : start + batch_size] for start in range(0, len(members), batch_size)]
    return batches


class VideoPrefetcher:
    """
    Reads every distinct video of `batches` once, one batch ahead: while batch `i` generates, a background thread
    reads the videos that batch `i + 1` is the first to use (decoding with PyAV and the tensor work of the video
    processor both release the GIL).

    Args:
        batches: the batches, in the order they will run.
        read_video: path -> the model's pixel values for that video; an exception it raises is returned in its place.
    """

    def __init__(self, batches: Sequence[Sequence[EvalRequest]], read_video: Callable[[str], Any]):
        first_use: dict[str, int] = {}
        self.last_use: dict[str, int] = {}
        for index, batch in enumerate(batches):
            for request in batch:
                for path in request.videos:
                    first_use.setdefault(path, index)
                    self.last_use[path] = index
        self._first_used_by: list[list[str]] = [[] for _ in batches]
        for path, index in first_use.items():
            self._first_used_by[index].append(path)
        self._read_video = read_video
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slowfast-hf-video")
        self._pending: dict[int, Future] = {}

    def new_videos(self, index: int) -> dict[str, Any]:
        """The videos batch `index` is the first to use: path -> pixel values, or the exception reading raised.
        Starts reading the next batch's videos."""
        self._start(index)
        self._start(index + 1)
        return self._pending.pop(index).result()

    def _start(self, index: int) -> None:
        if index < len(self._first_used_by) and index not in self._pending:
            self._pending[index] = self._executor.submit(self._read_all, self._first_used_by[index])

    def _read_all(self, paths: list[str]) -> dict[str, Any]:
        videos = {}
        for path in paths:
            try:
                videos[path] = self._read_video(path)
            except Exception as error:
                videos[path] = error
        return videos

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "VideoPrefetcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


__all__ = ["EvalFailure", "EvalRequest", "VideoPrefetcher", "plan_batches", "visuals_of"]
