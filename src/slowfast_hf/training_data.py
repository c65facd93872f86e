# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Training data for slow-fast models: video conversations in the annotation format of the released research code, and
a collator that turns them into padded batches with labels on the assistant replies only.

An annotation file is a JSON list (`.json`) or one JSON object per line (`.jsonl`) of entries such as

    {"id": "clip-0001", "video": "clips/0001.mp4",
     "conversations": [{"from": "human", "value": "<video>\\nWhat happens?"},
                       {"from": "gpt", "value": "A red square moves to the right."},
                       {"from": "human", "value": "What colour is it?"},
                       {"from": "gpt", "value": "Red."}]}

Turns alternate `human`/`gpt`, starting with `human` and ending with `gpt`. An entry with a `"video"` holds exactly
one `<video>` placeholder, in its first human turn; an entry without one is a text-only conversation. Relative video
paths are resolved against `video_root` (defaults to the annotation file's folder). Other keys (`"id"`, ...) are
metadata: `"id"` names the entry in error messages, the rest is not read.
"""

import json
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .processing_slowfast import SlowFastProcessor

ROLES = {"human": "user", "gpt": "assistant"}
PROCESSOR_PLACEHOLDERS = ("<video>", "<image>")  # what the processor expands into fast-token placeholders


def load_annotations(annotation_file: str | os.PathLike) -> list[dict]:
    """The entries of a `.json` (a list of objects) or `.jsonl` (one object per line) annotation file."""
    path = Path(annotation_file)
    if path.suffix not in (".json", ".jsonl"):
        raise ValueError(f"`annotation_file` must be a .json or .jsonl file, got {str(path)!r}.")
    if not path.is_file():
        raise FileNotFoundError(f"`annotation_file` {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(entries, list):
            raise ValueError(f"{path} must hold a JSON list of entries, got a {type(entries).__name__}.")
        return entries
    entries = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {line_number}: not valid JSON: {error}") from error
    return entries


def annotation_to_messages(
    entry: dict,
    index: int,
    video_root: str | os.PathLike,
    video_placeholder: str = "<video>",
    check_video_exists: bool = True,
) -> list[dict]:
    """
    One annotation entry -> chat messages for [`SlowFastProcessor.apply_chat_template`]: `human` turns become `user`
    messages, `gpt` turns `assistant` messages, and the video placeholder in the first human turn becomes a
    `{"type": "video", "path": ...}` content part at the same place.

    Args:
        entry (`dict`): the entry (see the module docstring).
        index (`int`): its position in the annotation file, for error messages.
        video_root (`str` or `os.PathLike`): the folder that relative video paths are resolved against.
        video_placeholder (`str`, *optional*, defaults to `"<video>"`): the placeholder marking the video in the
            first human turn (LLaVA-style files that mark videos with `"<image>"` pass that).
        check_video_exists (`bool`, *optional*, defaults to `True`): raise if the video file does not exist.
    """
    name = f"Annotation entry {index}" + (
        f" (id {entry['id']!r})" if isinstance(entry, dict) and "id" in entry else ""
    )
    if not isinstance(entry, dict):
        raise ValueError(f"{name} must be a JSON object, got a {type(entry).__name__}.")
    if "image" in entry:
        raise ValueError(f"{name} has an `image` field; only video and text-only entries are supported.")
    conversations = entry.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise ValueError(f"{name}: `conversations` must be a non-empty list of turns, got {conversations!r}.")
    for turn_index, turn in enumerate(conversations):
        field = f"{name}: `conversations[{turn_index}]`"
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise ValueError(f'{field} must be an object with a string "value", got {turn!r}.')
        expected = "human" if turn_index % 2 == 0 else "gpt"
        if turn.get("from") != expected:
            raise ValueError(
                f'{field} has "from" {turn.get("from")!r}; turns must alternate "human" and "gpt", starting with '
                f'"human", so this one must be {expected!r}.'
            )
    if conversations[-1]["from"] != "gpt":
        raise ValueError(f'{name}: `conversations` ends with a "human" turn that has no "gpt" reply to learn.')
    for turn_index, turn in enumerate(conversations):
        for placeholder in PROCESSOR_PLACEHOLDERS:
            if placeholder != video_placeholder and placeholder in turn["value"]:
                raise ValueError(
                    f"{name}: `conversations[{turn_index}]` holds {placeholder!r}, which the processor would expand "
                    f"into placeholders of a visual input this entry does not give; only {video_placeholder!r} marks "
                    "the video. Remove it from the text."
                )

    counts = [turn["value"].count(video_placeholder) for turn in conversations]
    video = entry.get("video")
    if video is None:
        if sum(counts):
            raise ValueError(f"{name} has no `video` but its conversation holds {video_placeholder!r}.")
        video_path = None
    else:
        if not isinstance(video, str) or not video:
            raise ValueError(f"{name}: `video` must be a non-empty path string, got {video!r}.")
        if counts[0] != 1 or sum(counts) != 1:
            raise ValueError(
                f"{name} has a `video`, so its first human turn (`conversations[0]`) must hold exactly one "
                f"{video_placeholder!r} and no other turn any; found {counts} per turn."
            )
        video_path = Path(video) if os.path.isabs(video) else Path(video_root) / video
        if check_video_exists and not video_path.is_file():
            raise FileNotFoundError(f"{name}: `video` {str(video_path)!r} does not exist.")

    messages = []
    for turn_index, turn in enumerate(conversations):
        text = turn["value"]
        if turn_index == 0 and video_path is not None:
            before, after = text.split(video_placeholder)
            after = after.removeprefix("\n")  # the chat template writes the placeholder as "<video>\n"
            content = [{"type": "text", "text": before}] if before else []
            content.append({"type": "video", "path": str(video_path)})
            content += [{"type": "text", "text": after}] if after else []
        else:
            content = [{"type": "text", "text": text}]
        messages.append({"role": ROLES[turn["from"]], "content": content})
    return messages


class VideoConversationDataset(Dataset):
    """
    Video conversations from an annotation file (see the module docstring). Every entry is validated and converted
    when the dataset is built, so a malformed entry fails at once with its index and field; videos are decoded later,
    by the collator. `dataset[i]` is entry `i` as chat messages (see [`annotation_to_messages`]).

    Args:
        annotation_file (`str` or `os.PathLike`): a `.json` or `.jsonl` annotation file.
        video_root (`str` or `os.PathLike`, *optional*): the folder relative video paths are resolved against;
            defaults to the annotation file's folder.
        video_placeholder (`str`, *optional*, defaults to `"<video>"`): the placeholder marking the video.
        check_videos_exist (`bool`, *optional*, defaults to `True`): check that every video file exists.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike,
        video_root: str | os.PathLike | None = None,
        video_placeholder: str = "<video>",
        check_videos_exist: bool = True,
    ):
        if not isinstance(video_placeholder, str) or not video_placeholder:
            raise ValueError(f"`video_placeholder` must be a non-empty string, got {video_placeholder!r}.")
        if video_root is not None and not Path(video_root).is_dir():
            raise FileNotFoundError(f"`video_root` {str(video_root)!r} is not a folder.")
        entries = load_annotations(annotation_file)
        if not entries:
            raise ValueError(f"`annotation_file` {str(annotation_file)!r} holds no entries.")
        root = Path(annotation_file).parent if video_root is None else Path(video_root)
        self.conversations = [
            annotation_to_messages(entry, index, root, video_placeholder, check_videos_exist)
            for index, entry in enumerate(entries)
        ]

    def __len__(self) -> int:
        return len(self.conversations)

    def __getitem__(self, index: int) -> list[dict]:
        return self.conversations[index]


class SlowFastDataCollator:
    """
    Chat conversations -> a right-padded training batch: the processor applies its chat template, reads and
    processes the videos and expands their placeholders, and [`SlowFastProcessor.build_labels`] keeps only the
    assistant replies in the labels.

    Returns a `dict` with `input_ids` and `attention_mask` `(B, L)`, `labels` `(B, L)` (`-100` outside the assistant
    replies, on placeholders and on padding) and, when the batch holds videos, `pixel_values_videos`
    `(total_frames, 3, H, W)` and `video_num_frames` `(num_videos,)`.

    Args:
        processor ([`SlowFastProcessor`]): its tokenizer must be a fast tokenizer with a pad token.
    """

    def __init__(self, processor: SlowFastProcessor):
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or not callable(getattr(processor, "build_labels", None)):
            raise ValueError(f"`processor` must be a SlowFastProcessor with a tokenizer, got {type(processor)}.")
        if tokenizer.pad_token_id is None:
            raise ValueError("`processor.tokenizer` has no pad token, which padding a batch needs; set `pad_token`.")
        self.processor = processor

    def __call__(self, conversations: list[list[dict]]) -> dict[str, torch.Tensor]:
        if not conversations:
            raise ValueError("`conversations` is empty.")
        batch = self.processor.apply_chat_template(
            conversations,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            return_assistant_tokens_mask=True,
            processor_kwargs={"padding": True, "padding_side": "right"},
        )
        labels = self.processor.build_labels(batch)  # (B, L)
        inputs = {name: value for name, value in batch.items() if name != "assistant_masks"}
        return {**inputs, "labels": labels}


__all__ = [
    "SlowFastDataCollator",
    "VideoConversationDataset",
    "annotation_to_messages",
    "load_annotations",
]
