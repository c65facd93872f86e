# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""End-to-end demo on built-in data (no network): a tiny slow-fast video model finds a needle in a video.

1. Tiny base parts, saved locally like Hub checkpoints: a SigLIP vision encoder, a Qwen2 LM and a BPE tokenizer
   trained on the spot.
2. A "needle in a video" dataset of real mp4 files (written with PyAV) and annotations in the released research
   code's JSONL format. Every clip has 16 dark frames, each of one random colour; in ONE frame a bright square of one
   of four colours covers one slow token (a quarter of the frame). The question asks for its colour.
3. Three models built from the same base parts with `SlowFastForConditionalGeneration.from_vision_text_pretrained`
   and fine-tuned the same way with the Trainer:
   - `slow-fast`: 2 fast tokens in the sequence (8-frame windows, pooled 2x2 in space) and the 64 per-frame slow
     tokens read through cross-attention by hybrid layers (all 4 decoder layers of this tiny LM);
   - `fast-only`: the same model without hybrid layers, so the same context;
   - `all-frames`: self-attention only, every frame's 4 tokens (64) in the sequence.
   A fast token averages the needle with 31 other frame regions of random colours, so the needle washes out; the slow
   tokens keep it.
4. Each model is saved as a Hub-ready folder (`slowfast_hf.hub.save_for_hub`: weights, code, processor, model card),
   reloaded with `AutoModelForImageTextToText` + `AutoProcessor`, and answers the held-out questions greedily.
5. A table: accuracy, context length and prefill FLOPs (`torch.utils.flop_counter.FlopCounterMode`) of each model.

    python examples/demo.py            # ~5 minutes on 2 CPU cores
    python examples/demo.py --fast     # a few training steps: checks the pipeline, not the accuracy
"""

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import av
import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
    set_seed,
)

import slowfast_hf  # noqa: F401  (registers the Auto classes)
from slowfast_hf import SlowFastForConditionalGeneration, SlowFastProcessor, SlowFastVideoProcessor
from slowfast_hf.hub import save_for_hub
from slowfast_hf.training import (
    SlowFastDataCollator,
    SlowFastTrainer,
    SlowFastTrainingArguments,
    VideoConversationDataset,
    freeze_for_training,
)

COLOURS = {"red": (255, 80, 80), "green": (80, 255, 80), "blue": (80, 80, 255), "yellow": (255, 255, 80)}
QUESTION = "What colour is the square? Answer red, green, blue or yellow."
NUM_FRAMES = 16
FRAME_SIZE, PATCH_SIZE = 32, 8  # a 4x4 patch grid per frame
NEEDLE_SIZE = 16  # pixels: one slow token (2x2 patches)
BACKGROUND_MAX = 80  # background frames: one random colour each, every channel in [0, 80]

# The three models of the table. Slow tokens: each frame pooled 2x2 (4 per frame, 64 per video).
FAST_TOKENS = dict(fast_temporal_stride=8, fast_spatial_stride=2)  # 16 frames -> 2 windows of 1 token
VARIANTS = {
    "slow-fast": dict(hybrid_layer_interval=1, **FAST_TOKENS),
    "fast-only": dict(hybrid_layers=[], **FAST_TOKENS),
    "all-frames": dict(hybrid_layers=[], fast_temporal_stride=1, fast_spatial_stride=1),
}


@dataclass(frozen=True)
class Settings:
    train_samples: int
    test_samples: int
    epochs: int
    batch_size: int


FULL = Settings(train_samples=960, test_samples=100, epochs=5, batch_size=16)
FAST = Settings(train_samples=48, test_samples=8, epochs=2, batch_size=8)
LEARNING_RATE = 1e-3
HYBRID_LEARNING_RATE = 1e-2  # the hybrid cross-attention's own learning rate, as in the released recipe


def train_tokenizer(save_directory: Path) -> PreTrainedTokenizerFast:
    """A small BPE tokenizer for the demo's ChatML conversations, with the ChatML and placeholder special tokens."""
    corpus = [f"system\nYou are a helpful assistant.\nuser\n{QUESTION}\nassistant\n{colour}\n" for colour in COLOURS]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    special_tokens = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<video>", "<image>"]
    backend.train_from_iterator(corpus, trainer=trainers.BpeTrainer(vocab_size=200, special_tokens=special_tokens))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<video>", "<image>"],
    )
    tokenizer.save_pretrained(save_directory)
    return tokenizer


def build_base_parts(directory: Path) -> tuple[Path, Path, PreTrainedTokenizerFast]:
    """A tiny SigLIP vision encoder and a tiny Qwen2 LM (with the tokenizer), saved like Hub checkpoints."""
    vision_dir, text_dir = directory / "siglip-tiny", directory / "qwen2-tiny"
    tokenizer = train_tokenizer(text_dir)
    vision_config = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=FRAME_SIZE,
        patch_size=PATCH_SIZE,
    )
    SiglipVisionModel(vision_config).save_pretrained(vision_dir)
    text_config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    Qwen2ForCausalLM(text_config).save_pretrained(text_dir)
    return vision_dir, text_dir, tokenizer


def needle_video(rng: np.random.Generator, colour: str) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: each of one random dark colour; in one random frame, a bright square."""
    frames = np.empty((NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    frames[:] = rng.integers(0, BACKGROUND_MAX + 1, (NUM_FRAMES, 1, 1, 3), dtype=np.uint8)
    frame = rng.integers(NUM_FRAMES)
    top, left = rng.integers(FRAME_SIZE // NEEDLE_SIZE, size=2) * NEEDLE_SIZE
    frames[frame, top : top + NEEDLE_SIZE, left : left + NEEDLE_SIZE] = COLOURS[colour]
    return frames


def write_mp4(path: Path, frames: np.ndarray) -> None:
    """H.264 (MPEG-4 Part 2 where PyAV has no H.264 encoder) at a high quality, one thread (deterministic)."""
    with av.open(str(path), mode="w") as container:
        if "libx264" in av.codecs_available:
            stream = container.add_stream("libx264", rate=8, options={"crf": "10", "preset": "veryfast"})
        else:
            stream = container.add_stream("mpeg4", rate=8, options={"qscale": "2"})
        stream.width, stream.height, stream.pix_fmt = FRAME_SIZE, FRAME_SIZE, "yuv420p"
        stream.codec_context.thread_count = 1
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def write_dataset(directory: Path, settings: Settings, seed: int) -> tuple[Path, Path]:
    """Clips in `directory/videos`, and `train.jsonl` / `test.jsonl` in the released annotation format."""
    rng = np.random.default_rng(seed)
    (directory / "videos").mkdir(parents=True, exist_ok=True)
    files = []
    for split, count in (("train", settings.train_samples), ("test", settings.test_samples)):
        lines = []
        for index in range(count):
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
            video = f"videos/{split}-{index:04d}.mp4"
            write_mp4(directory / video, needle_video(rng, colour))
            conversation = [{"from": "human", "value": f"<video>\n{QUESTION}"}, {"from": "gpt", "value": colour}]
            lines.append(json.dumps({"id": f"{split}-{index:04d}", "video": video, "conversations": conversation}))
        files.append(directory / f"{split}.jsonl")
        files[-1].write_text("\n".join(lines) + "\n")
    return files[0], files[1]


def build_model(variant: str, vision_dir: Path, text_dir: Path, tokenizer, seed: int):
    """One of `VARIANTS` around the base parts (their weights unchanged), and its processor."""
    set_seed(seed)
    model = SlowFastForConditionalGeneration.from_vision_text_pretrained(
        str(vision_dir),
        str(text_dir),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        **VARIANTS[variant],
    )
    video_processor = SlowFastVideoProcessor(size={"height": FRAME_SIZE, "width": FRAME_SIZE}, num_frames=NUM_FRAMES)
    return model, SlowFastProcessor.from_model_config(model.config, video_processor, tokenizer)


def fine_tune(model, processor, train_file: Path, output_dir: Path, settings: Settings, seed: int) -> None:
    # The base parts are random, so everything trains (the vision tower too).
    freeze_for_training(model, "all")
    arguments = SlowFastTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=settings.batch_size,
        num_train_epochs=settings.epochs,
        learning_rate=LEARNING_RATE,
        hybrid_learning_rate=HYBRID_LEARNING_RATE if model.config.hybrid_layers else None,
        lr_scheduler_type="cosine",
        warmup_steps=10,
        logging_steps=20,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        disable_tqdm=False,
    )
    trainer = SlowFastTrainer(
        model=model,
        args=arguments,
        train_dataset=VideoConversationDataset(train_file),
        data_collator=SlowFastDataCollator(processor),
        processing_class=processor,
    )
    trainer.train()


def evaluate(model, processor, test_file: Path, batch_size: int = 25) -> tuple[float, list[dict]]:
    """Greedy answers to the held-out questions; accuracy in percent."""
    dataset = VideoConversationDataset(test_file)
    processor.tokenizer.padding_side = "left"
    answers = []
    for start in range(0, len(dataset), batch_size):
        conversations = [dataset[index] for index in range(start, min(start + batch_size, len(dataset)))]
        inputs = processor.apply_chat_template(
            [conversation[:1] for conversation in conversations],  # the question, without the reply
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        texts = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for conversation, text in zip(conversations, texts):
            answers.append({"answer": text.strip(), "truth": conversation[1]["content"][0]["text"]})
    accuracy = 100 * sum(answer["answer"] == answer["truth"] for answer in answers) / len(answers)
    return accuracy, answers


def cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """`FlopCounterMode` has no formula for the CPU SDPA kernel: QK^T and AV, like its own formula for the others."""
    batch, heads, query_length, head_dim = query_shape
    return 2 * batch * heads * query_length * key_shape[-2] * (head_dim + value_shape[-1])


def count_flops(function, **kwargs) -> int:
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        function(**kwargs)
    return counter.get_total_flops()


def prefill_cost(model, processor, conversation: list[dict]) -> dict:
    """Context length and prefill FLOPs of one question: the vision encoder + projector (the same for every model),
    and the LLM's (the decoder on the prompt, slow-token K/V projection and cross-attention included)."""
    inputs = processor.apply_chat_template(
        [conversation[:1]], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    videos = dict(pixel_values_videos=inputs["pixel_values_videos"], video_num_frames=inputs["video_num_frames"])
    features = model.get_video_features(**videos)
    return {
        "context_tokens": inputs["input_ids"].shape[1],
        "visual_tokens_in_context": sum(len(tokens) for tokens in features.fast_tokens),
        "slow_tokens_read": sum(len(tokens) for tokens in features.slow_tokens) if model.config.hybrid_layers else 0,
        "prefill_flops": count_flops(model, input_ids=inputs["input_ids"], video_features=features),
        "vision_flops": count_flops(model.get_video_features, **videos),
    }


TASK = (
    f"Task: name the colour of the bright square that appears in one of the {NUM_FRAMES} frames; "
    f"{len(COLOURS)} colours ({', '.join(COLOURS)}), so guessing scores the chance level {100 / len(COLOURS):.1f}%."
)


def print_table(results: dict) -> None:
    print(f"\n{TASK}")
    print(f"\n{'model':<12}{'accuracy':>10}{'context (tokens)':>18}{'slow tokens':>13}{'prefill MFLOPs':>16}")
    for name, row in results.items():
        print(
            f"{name:<12}{row['accuracy']:>8.1f} %{row['context_tokens']:>18}{row['slow_tokens_read']:>13}"
            f"{row['prefill_flops'] / 1e6:>16.1f}"
        )
    vision = results["slow-fast"]["vision_flops"] / 1e6
    print(
        "prefill MFLOPs: the LLM's on one question (FlopCounterMode), slow-token K/V and cross-attention included;\n"
        f"the vision encoder and projector add {vision:.1f} MFLOPs per video to every row."
    )
    slow_fast, all_frames = results["slow-fast"], results["all-frames"]
    print(
        f"slow-fast vs all-frames: {100 * slow_fast['context_tokens'] / all_frames['context_tokens']:.0f}% of the "
        f"context, {100 * slow_fast['prefill_flops'] / all_frames['prefill_flops']:.0f}% of the prefill FLOPs; "
        f"vs fast-only: {slow_fast['accuracy'] - results['fast-only']['accuracy']:+.1f} points."
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("examples/out/demo"), help="where everything goes")
    parser.add_argument("--fast", action="store_true", help="a few training steps: checks the pipeline only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = FAST if args.fast else FULL
    # Tiny tensors: one thread is faster than several, and does not suffer when other processes share the cores.
    torch.set_num_threads(1)
    start = time.perf_counter()

    print(TASK)
    set_seed(args.seed)
    vision_dir, text_dir, tokenizer = build_base_parts(args.output_dir / "base")
    train_file, test_file = write_dataset(args.output_dir / "data", settings, args.seed)
    print(
        f"base parts and {settings.train_samples} + {settings.test_samples} clips written in "
        f"{time.perf_counter() - start:.0f} s"
    )

    results = {}
    for name in VARIANTS:
        variant_start = time.perf_counter()
        print(f"\n== {name}: fine-tuning")
        model, processor = build_model(name, vision_dir, text_dir, tokenizer, args.seed)
        fine_tune(model, processor, train_file, args.output_dir / "runs" / name, settings, args.seed)
        folder = args.output_dir / "models" / name
        save_for_hub(
            model,
            processor,
            folder,
            license="apache-2.0",
            training_data=(
                f"{settings.train_samples} synthetic {NUM_FRAMES}-frame clips (`examples/demo.py`): dark frames of "
                "random colours, one of which shows a bright square; the question asks for its colour."
            ),
        )
        model = AutoModelForImageTextToText.from_pretrained(folder).eval()
        processor = AutoProcessor.from_pretrained(folder)
        accuracy, answers = evaluate(model, processor, test_file)
        results[name] = {
            "accuracy": accuracy,
            **prefill_cost(model, processor, VideoConversationDataset(test_file)[0]),
            "answers": answers,
        }
        print(
            f"== {name}: {accuracy:.1f}% on {len(answers)} held-out questions, saved to {folder} "
            f"({time.perf_counter() - variant_start:.0f} s)"
        )

    print_table(results)
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; results in {args.output_dir / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
