# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""The lmms-eval model `slowfast_hf`: batched `generate_until` and `loglikelihood` for slow-fast checkpoints."""

import atexit
import math

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, unwrap_generation_output
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor

from ..modeling_slowfast import SlowFastForConditionalGeneration
from ..visual_inputs import SlowFastVisualFeatures
from .batching import EvalFailure, EvalRequest, VideoPrefetcher, plan_batches, visuals_of

DEFAULT_MAX_NEW_TOKENS = 256  # the released adapter's
GENERATION_KWARGS = ("until", "max_new_tokens", "temperature", "do_sample", "top_p", "top_k", "num_beams")
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class SlowFastLMMS(lmms):
    r"""
    A slow-fast checkpoint as an lmms-eval model. Requests are answered in batches: each distinct video is read once
    (with the package's PyAV reader and the checkpoint's video processor, one batch ahead in a background thread) and
    encoded once with `get_video_features`, however many questions ask about it; the prompts are left-padded and
    answered by one `generate` (or one forward pass for `loglikelihood`) per batch.

    Prompts are the released adapter's: the checkpoint's chat template (ChatML) with the task's visuals, each
    followed by a newline, before the task's question (`<image>\n` + question in the released code, whose `<image>`
    stands for the video).

    Model args (`--model_args key=value,...`):
        pretrained (`str`): a slow-fast checkpoint (model and processor), a folder or a Hub id.
        num_frames (`int`, *optional*): frames sampled from each video; defaults to the checkpoint's video processor
            setting (for a converted released model, the count it was trained with).
        batch_size (`int`): requests per batch (`--batch_size`).
        device (`str`, *optional*): `cuda` when available, else `cpu`; under `accelerate launch` each process uses
            its own GPU.
        dtype (`str`): `auto` (the checkpoint's), `bfloat16`, `float16` or `float32`.
        attn_implementation (`str`, *optional*): passed to `from_pretrained`.
        max_new_tokens (`int`): used when a task sets none (the released adapter's 256).
        record_failures (`bool`): when a video cannot be read or a generation fails, record the request instead of
            raising: its document is left out of the scores, and every recorded failure is listed at the end.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        num_frames: int | None = None,
        batch_size: int | str = 1,
        device: str | None = None,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        record_failures: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(pretrained, str) or not pretrained:
            raise ValueError(f"`pretrained` must be a checkpoint folder or Hub id, got {pretrained!r}.")
        self.batch_size_per_gpu = _positive_int("batch_size", batch_size)
        self.num_frames = None if num_frames is None else _positive_int("num_frames", num_frames)
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
        if dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {sorted(DTYPES)}, got {dtype!r}.")
        if not isinstance(record_failures, bool):
            raise ValueError(f"`record_failures` must be True or False, got {record_failures!r}.")
        self.record_failures = record_failures
        self.failures: list[EvalFailure] = []

        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:
            self._device = self.accelerator.device
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        else:
            self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

        self.processor = AutoProcessor.from_pretrained(pretrained)
        load_kwargs = {"dtype": DTYPES[dtype]}
        if attn_implementation is not None:
            load_kwargs["attn_implementation"] = attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(pretrained, **load_kwargs)
        if not isinstance(model, SlowFastForConditionalGeneration):
            raise ValueError(f"`pretrained` {pretrained!r} holds a {type(model).__name__}, not a slow-fast model.")
        self._model = model.to(self._device).eval()
        video_processor = self.processor.video_processor
        if self.num_frames is None and video_processor.num_frames is None and video_processor.fps is None:
            raise ValueError(
                f"The video processor of {pretrained!r} samples every frame of a video; pass `num_frames`."
            )
        self.tokenizer = self.processor.tokenizer
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError(
                f"The tokenizer of {pretrained!r} has neither a pad nor an eos token to pad batches with."
            )

    @property
    def model(self) -> SlowFastForConditionalGeneration:
        return self._model

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    def generate_until(self, requests) -> list[str]:
        parsed = [self._parse(position, instance) for position, instance in enumerate(requests)]
        settings = {id(request): _generation_settings(request, self.max_new_tokens) for request in parsed}
        batches = plan_batches(
            parsed, self.batch_size, group_key=lambda request: repr(sorted(settings[id(request)].items()))
        )
        answers: list[str | None] = [None] * len(parsed)

        def answer(batch, video_features, image_features):
            texts = self._generate(batch, settings[id(batch[0])], video_features, image_features)
            for request, text in zip(batch, texts):
                answers[request.position] = text

        self._run_batches(batches, answer, stage="generate")
        return [text if text is not None else "" for text in answers]

    def loglikelihood(self, requests) -> list[tuple[float, bool] | None]:
        parsed = [self._parse(position, instance) for position, instance in enumerate(requests)]
        batches = plan_batches(parsed, self.batch_size, group_key=lambda request: None)
        scores: list[tuple[float, bool] | None] = [None] * len(parsed)

        def score(batch, video_features, image_features):
            for request, result in zip(batch, self._score(batch, video_features, image_features)):
                scores[request.position] = result

        self._run_batches(batches, score, stage="loglikelihood")
        return _through_lmms_eval_unwrapping(scores)

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("The slowfast_hf model answers single-round tasks only (generate_until).")

    def clean(self) -> None:
        """lmms-eval calls this once every request has run, before scoring: the failure summary goes here, and its
        count again after lmms-eval's results table."""
        if self.failures:
            self._print_failures()
            atexit.register(_print_failure_count, list(self.failures))
        super().clean()

    # requests

    def _parse(self, position: int, instance) -> EvalRequest:
        arguments = instance.args
        if len(arguments) == 2:  # lmms-eval's context-free loglikelihood requests (acc_mutual_info)
            context, payload = arguments
            return EvalRequest(position, None, None, None, context, (), payload, instance)
        context, payload, doc_to_visual, doc_id, task, split = arguments
        request = EvalRequest(position, task, split, doc_id, context, (), payload, instance)
        if callable(payload):  # loglikelihood tasks may pass `doc_to_target` instead of the continuation
            payload = payload(self.task_dict[task][split][doc_id])
        visuals = visuals_of(doc_to_visual, self.task_dict[task][split][doc_id], request.describe())
        return EvalRequest(position, task, split, doc_id, context, visuals, payload, instance)

    def _read_video(self, path: str) -> torch.Tensor:
        """(T, 3, H, W) pixel values of one video, sampled and preprocessed as the checkpoint's processor does."""
        return self.processor.video_processor.preprocess(path, num_frames=self.num_frames)["pixel_values_videos"]

    def _run_batches(self, batches: list[list[EvalRequest]], run, stage: str) -> None:
        """Read, encode and run every batch; each video is encoded once and kept until its last batch has run."""
        failed: list[EvalRequest] = []
        encoded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # path -> (fast tokens, slow tokens)
        unusable: dict[str, tuple[str, str, Exception]] = {}  # path -> (stage, what went wrong, the error)
        progress = tqdm(total=sum(map(len, batches)), disable=self.rank != 0, desc="Model Responding")
        with VideoPrefetcher(batches, self._read_video) as prefetcher, torch.inference_mode():
            for index, batch in enumerate(batches):
                for path, pixels in prefetcher.new_videos(index).items():
                    if isinstance(pixels, Exception):
                        unusable[path] = ("read video", f"cannot read video {path!r}", pixels)
                        continue
                    try:
                        features = self.model.get_video_features(pixels.to(self.device), [pixels.shape[0]])
                        encoded[path] = (features.fast_tokens[0], features.slow_tokens[0])
                    except Exception as error:
                        unusable[path] = ("encode video", f"cannot encode video {path!r}", error)
                runnable = []
                for request in batch:
                    broken = [path for path in request.videos if path in unusable]
                    if broken:
                        self._fail(request, *unusable[broken[0]])
                        failed.append(request)
                    else:
                        runnable.append(request)
                failed += self._run_batch(runnable, encoded, run, stage)
                progress.update(len(batch))
                for path in [path for path, last in prefetcher.last_use.items() if last == index]:
                    encoded.pop(path, None)
                    unusable.pop(path, None)
        progress.close()
        if failed:
            self._leave_out_of_scores(failed)

    def _run_batch(self, batch: list[EvalRequest], encoded: dict, run, stage: str) -> list[EvalRequest]:
        """Runs `batch`; returns the requests that failed (only when failures are recorded)."""
        if not batch:
            return []
        try:
            run(batch, *self._visual_features(batch, encoded))
            return []
        except Exception as error:
            if not self.record_failures:
                where = "; ".join(request.describe() for request in batch)
                raise RuntimeError(f"{stage} failed for {where}: {error}") from error
            if len(batch) > 1:  # find out which requests fail on their own
                return [failed for request in batch for failed in self._run_batch([request], encoded, run, stage)]
            self._fail(batch[0], stage, f"{stage} failed", error)
            return batch

    def _visual_features(self, batch: list[EvalRequest], encoded: dict):
        """The batch's video and image features, sample by sample in prompt order, or None where it has none."""
        videos = [encoded[path] for request in batch for path in request.videos]
        images = [visual for request in batch for visual in request.visuals if not isinstance(visual, str)]
        video_features = image_features = None
        if videos:
            video_features = SlowFastVisualFeatures(
                fast_tokens=[fast for fast, _ in videos], slow_tokens=[slow for _, slow in videos]
            )
        if images:
            pixels = self.processor.video_processor.preprocess_images(images)["pixel_values"]
            image_features = self.model.get_image_features(pixels.to(self.device))
        return video_features, image_features

    # prompts

    def _prompt_ids(self, request: EvalRequest, video_features, image_features, offsets: dict) -> list[int]:
        """Token ids of the request's prompt, each placeholder expanded to its visual's fast-token count."""
        content = [{"type": "video" if isinstance(visual, str) else "image"} for visual in request.visuals]
        content.append({"type": "text", "text": request.context})
        prompt = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        for kind, token, features in (
            ("video", self.processor.video_token, video_features),
            ("image", self.processor.image_token, image_features),
        ):
            pieces = prompt.split(token)
            count = sum(1 for visual in request.visuals if isinstance(visual, str) == (kind == "video"))
            if len(pieces) - 1 != count:
                raise ValueError(
                    f"{request.describe()}: the prompt holds {len(pieces) - 1} {token!r} placeholders for {count} "
                    f"{kind}(s); the question must not contain {token!r} itself."
                )
            start = offsets[kind]
            fast_counts = [fast.shape[0] for fast in features.fast_tokens[start : start + count]] if count else []
            offsets[kind] = start + count
            prompt = pieces[0] + "".join(token * n + piece for n, piece in zip(fast_counts, pieces[1:]))
        bos = self.tokenizer.bos_token
        add_special_tokens = not (bos is not None and prompt.startswith(bos))  # as the processor tokenizes prompts
        return self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]

    def _batch_ids(self, batch, video_features, image_features, continuations=None):
        offsets = {"video": 0, "image": 0}
        sequences = [self._prompt_ids(request, video_features, image_features, offsets) for request in batch]
        if continuations is not None:
            sequences = [prompt + continuation for prompt, continuation in zip(sequences, continuations)]
        length = max(map(len, sequences))
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, sequence in enumerate(sequences):  # left padding
            input_ids[row, length - len(sequence) :] = torch.tensor(sequence)
            attention_mask[row, length - len(sequence) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    # generation and scoring

    def _generate(self, batch, settings: dict, video_features, image_features) -> list[str]:
        input_ids, attention_mask = self._batch_ids(batch, video_features, image_features)
        settings = dict(settings)
        until = list(settings.pop("until"))
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            video_features=video_features,
            image_features=image_features,
            pad_token_id=self.pad_token_id,
            stop_strings=until or None,
            tokenizer=self.tokenizer if until else None,
            **settings,
        )
        texts = self.tokenizer.batch_decode(output[:, input_ids.shape[1] :], skip_special_tokens=True)
        return [_cut_at_stop_strings(text, until) for text in texts]

    def _score(self, batch, video_features, image_features) -> list[tuple[float, bool]]:
        """Per request: the negative log-likelihood of its continuation after the prompt (lmms-eval ranks choices by
        the smallest value), and whether greedy decoding would produce exactly the continuation."""
        continuations = []
        for request in batch:
            if not isinstance(request.payload, str) or not request.payload:
                raise ValueError(f"{request.describe()}: the continuation must be a non-empty string.")
            continuations.append(self.tokenizer(request.payload, add_special_tokens=False)["input_ids"])
        input_ids, attention_mask = self._batch_ids(batch, video_features, image_features, continuations)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        longest = max(map(len, continuations))
        logits = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            video_features=video_features,
            image_features=image_features,
            logits_to_keep=longest + 1,
        ).logits  # (B, longest + 1, V): the last position predicts nothing
        log_probs = logits.float().log_softmax(-1)
        results = []
        for row, continuation in enumerate(continuations):
            predicted = log_probs[row, longest - len(continuation) : longest]  # (n, V) predicting the continuation
            target = torch.tensor(continuation, device=predicted.device)
            negative_log_likelihood = -predicted.gather(-1, target[:, None]).sum().item()
            results.append((negative_log_likelihood, bool((predicted.argmax(-1) == target).all())))
        return results

    # failures

    def _fail(self, request: EvalRequest, stage: str, what: str, error: Exception) -> None:
        if not self.record_failures:
            raise RuntimeError(f"{request.describe()}: {what}: {error}") from error
        failure = EvalFailure(request.task, request.doc_id, request.videos, stage, f"{type(error).__name__}: {error}")
        self.failures.append(failure)
        logger.warning(f"slowfast_hf: recorded failure of {request.describe()}: {what}: {error}")

    def _leave_out_of_scores(self, failed: list[EvalRequest]) -> None:
        """Removes every request of a failed document from its task, so lmms-eval scores the document not at all
        rather than as a wrong answer."""
        by_task: dict[int, tuple[object, set]] = {}
        for request in failed:
            doc_to_visual = request.source.args[2] if len(request.source.args) == 6 else None
            task = getattr(doc_to_visual, "__self__", None)
            if not isinstance(getattr(task, "_instances", None), list):
                raise RuntimeError(
                    f"{request.describe()} failed and cannot be left out of the scores of this lmms-eval version; "
                    "rerun without `record_failures` to see the error."
                )
            by_task.setdefault(id(task), (task, set()))[1].add(request.doc_id)
        for task, doc_ids in by_task.values():
            task._instances = [instance for instance in task._instances if instance.doc_id not in doc_ids]

    def _print_failures(self) -> None:
        documents = {(failure.task, failure.doc_id) for failure in self.failures}
        header = (
            f"slowfast_hf: {len(self.failures)} request(s) of {len(documents)} document(s) failed; these documents "
            "are left out of the scores:"
        )
        lines = [header, f"| {'task':<24} | {'doc':>6} | {'stage':<13} | error"]
        for failure in self.failures:
            lines.append(f"| {failure.task!s:<24} | {failure.doc_id!s:>6} | {failure.stage:<13} | {failure.error}")
        print("\n".join(lines), flush=True)


def _print_failure_count(failures: list[EvalFailure]) -> None:
    documents = {(failure.task, failure.doc_id) for failure in failures}
    print(
        f"slowfast_hf: the scores above leave out {len(documents)} document(s) whose {len(failures)} request(s) failed "
        "(listed before the results).",
        flush=True,
    )


def _through_lmms_eval_unwrapping(scores: list) -> list:
    """lmms-eval 0.7's evaluator passes every model output through `unwrap_generation_output`, which turns the
    `(float, bool)` pairs of `loglikelihood` into strings, so no multiple-choice task can be scored; its
    `GenerationResult` passes its `text` through untouched. Wrap the pairs only when lmms-eval needs it."""
    if isinstance(unwrap_generation_output((0.0, False))[0], tuple):
        return scores
    return [GenerationResult(text=score) if score is not None else None for score in scores]


def _positive_int(name: str, value) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    return value


def _generation_settings(request: EvalRequest, default_max_new_tokens: int) -> dict:
    """The task's generation kwargs as `generate` arguments (plus `until`): greedy unless the task samples."""
    try:
        return _check_generation_kwargs(dict(request.payload or {}), default_max_new_tokens)
    except ValueError as error:
        raise ValueError(f"{request.describe()}: {error}") from None


def _check_generation_kwargs(gen_kwargs: dict, default_max_new_tokens: int) -> dict:
    unknown = sorted(set(gen_kwargs) - set(GENERATION_KWARGS))
    if unknown:
        raise ValueError(f"generation kwargs {unknown} are not supported (supported: {list(GENERATION_KWARGS)}).")
    until = gen_kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    if not all(isinstance(stop, str) and stop for stop in until):
        raise ValueError(f"`until` must be non-empty strings, got {gen_kwargs['until']!r}.")
    temperature = float(gen_kwargs.get("temperature", 0.0))
    do_sample = gen_kwargs.get("do_sample", temperature > 0)
    if not isinstance(do_sample, bool):
        raise ValueError(f"`do_sample` must be true or false, got {do_sample!r}.")
    if do_sample and not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"sampling needs a temperature > 0, got {temperature}.")
    settings = {
        "until": tuple(until),
        "max_new_tokens": _positive_int("max_new_tokens", gen_kwargs.get("max_new_tokens", default_max_new_tokens)),
        "num_beams": _positive_int("num_beams", gen_kwargs.get("num_beams", 1)),
        "do_sample": do_sample,
    }
    if do_sample:
        settings["temperature"] = temperature
        settings["top_p"] = float(gen_kwargs.get("top_p", 1.0))
        if gen_kwargs.get("top_k") is not None:
            settings["top_k"] = _positive_int("top_k", gen_kwargs["top_k"])
    return settings


def _cut_at_stop_strings(text: str, until: list[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    for stop in until:
        text = text.split(stop, 1)[0]
    return text


__all__ = ["SlowFastLMMS"]
