"""End-to-end demo on built-in data (no network): give a tiny Qwen2 decoder slow-fast video inputs.

1. Build tiny base parts (a SigLIP vision encoder and a Qwen2 causal LM) and save them like Hub checkpoints.
2. Wrap them with `SlowFastForConditionalGeneration.from_vision_text_pretrained`: the base weights stay unchanged,
   hybrid layers start with a zero gate, so text-only outputs equal the base LM's exactly.
3. Run a synthetic 32-frame video through the model, open the gate, generate, save, and reload with the Auto classes.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import (
    AutoModelForImageTextToText,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)

import slowfast_hf  # noqa: F401  (registers the Auto classes)
from slowfast_hf import SlowFastForConditionalGeneration

VIDEO_TOKEN_ID, IMAGE_TOKEN_ID = 510, 511
IMAGE_SIZE, PATCH_SIZE = 64, 8


def synthetic_video(num_frames: int) -> torch.Tensor:
    """(T, 3, H, W) frames in [-1, 1]: a bright square moving left to right over a gradient."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, IMAGE_SIZE), torch.linspace(-1, 1, IMAGE_SIZE), indexing="ij")
    frames = []
    for t in range(num_frames):
        frame = torch.stack([xs, ys, -xs]) * 0.5
        left = int(t * (IMAGE_SIZE - 12) / max(num_frames - 1, 1))
        frame[:, 26:38, left : left + 12] = 1.0
        frames.append(frame)
    return torch.stack(frames)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("examples/out"))
    parser.add_argument("--num-frames", type=int, default=32)
    args = parser.parse_args()
    if args.num_frames < 1:
        parser.error("--num-frames must be >= 1")
    torch.manual_seed(0)

    vision_dir, text_dir, model_dir = (
        args.output_dir / name for name in ("siglip-tiny", "qwen2-tiny", "slowfast-tiny")
    )
    SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
        )
    ).save_pretrained(vision_dir)
    text_model = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=512,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=8,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
        )
    ).eval()
    text_model.save_pretrained(text_dir)

    model = SlowFastForConditionalGeneration.from_vision_text_pretrained(
        str(vision_dir),
        str(text_dir),
        hybrid_layer_interval=4,
        fast_temporal_stride=4,
        video_token_id=VIDEO_TOKEN_ID,
        image_token_id=IMAGE_TOKEN_ID,
    ).eval()
    print(f"hybrid layers: {model.config.hybrid_layers} of {model.config.text_config.num_hidden_layers}")

    text_ids = torch.randint(1, 500, (1, 24))
    with torch.no_grad():
        same = torch.equal(model(input_ids=text_ids).logits, text_model(input_ids=text_ids).logits)
    print(f"text-only logits equal the base Qwen2's (gate closed): {same}")

    video = synthetic_video(args.num_frames)
    grid = IMAGE_SIZE // PATCH_SIZE
    builder = model.model.token_builder
    num_fast = builder.num_fast_tokens(args.num_frames, grid, grid)
    prompt = torch.tensor([[1, 2, 3] + [VIDEO_TOKEN_ID] * num_fast + [4, 5, 6]])
    for layer in model.model.language_model.layers:
        if hasattr(layer.self_attn, "cross_attn"):
            torch.nn.init.constant_(layer.self_attn.cross_attn.gate_alpha, 0.5)

    start = time.perf_counter()
    with torch.no_grad():
        generated = model.generate(
            input_ids=prompt, pixel_values_videos=video[None], max_new_tokens=8, do_sample=False
        )
    elapsed = time.perf_counter() - start
    model.save_pretrained(model_dir)
    reloaded = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    with torch.no_grad():
        again = reloaded.generate(input_ids=prompt, pixel_values_videos=video[None], max_new_tokens=8, do_sample=False)

    all_frame_tokens = args.num_frames * grid * grid
    print()
    print(f"{'inputs':<34}{'tokens':>8}")
    print(f"{'video frames':<34}{args.num_frames:>8}")
    print(f"{'fast tokens (in the sequence)':<34}{num_fast:>8}")
    print(f"{'slow tokens (cross-attended)':<34}{builder.num_slow_tokens(args.num_frames, grid, grid):>8}")
    print(f"{'all-frames tokens (for reference)':<34}{all_frame_tokens:>8}")
    print(f"{'prompt length with fast tokens':<34}{prompt.shape[1]:>8}")
    print()
    new_tokens = generated[0, prompt.shape[1] :].tolist()
    reloaded_same = torch.equal(generated, again)
    print(f"generated {len(new_tokens)} tokens in {elapsed:.2f} s: {new_tokens}")
    print(f"saved to {model_dir}; reloaded with AutoModelForImageTextToText, same tokens: {reloaded_same}")
    if not (same and reloaded_same):
        raise SystemExit("demo check failed")


if __name__ == "__main__":
    main()
