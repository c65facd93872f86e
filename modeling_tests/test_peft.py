"""PEFT: LoRA on the decoder while the projector and the hybrid cross-attention train fully; adapter save/load,
merging, the Trainer's hybrid learning rate through PEFT's wrappers, and `examples/train.py --lora_rank`."""

import re

import numpy as np
import pytest
import torch
import training_fixtures
from conftest import IMAGE_SIZE
from test_modeling import activate_hybrid_layers
from training_fixtures import (
    NUM_FRAMES,
    run_train_script,
    save_tiny_checkpoint,
    tiny_model,
    tiny_processor,
    video_entry,
    write_annotations,
    write_clips,
)
from transformers import AutoModelForImageTextToText

from slowfast_hf import SlowFastForConditionalGeneration
from slowfast_hf.training import (
    SlowFastDataCollator,
    SlowFastTrainer,
    SlowFastTrainingArguments,
    VideoConversationDataset,
    decoder_lora_config,
    is_hybrid_parameter,
)

peft = pytest.importorskip("peft")

one_thread = training_fixtures.one_thread
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # PEFT itself still reads the deprecated `is_gradient_checkpointing` alias of Transformers v5
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

LORA_TARGET = re.compile(r"model\.language_model\.layers\.\d\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)")


def inputs_with_video(tokenizer) -> dict:
    """A chat prompt holding one random `NUM_FRAMES`-frame video, through the processor."""
    frames = np.random.default_rng(1).integers(0, 256, (NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    messages = [
        {"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "what happens?"}]}
    ]
    return tiny_processor(tokenizer).apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


@torch.no_grad()
def logits(model, inputs) -> torch.Tensor:
    return model.eval()(**inputs).logits


def lora_model(tokenizer, seed: int = 0):
    """A LoRA-wrapped tiny model whose adapters and fully trained copies are all away from their initial values,
    so that every part of the adapter changes the logits."""
    base = activate_hybrid_layers(tiny_model(tokenizer, seed=seed))
    model = peft.get_peft_model(base, decoder_lora_config(base, r=4, lora_alpha=8, lora_dropout=0.0))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


def test_lora_targets_the_decoder_projections_only(tiny_tokenizer):
    base = tiny_model(tiny_tokenizer)
    config = decoder_lora_config(base, r=4)
    model = peft.get_peft_model(base, config)
    lora_layers = {name for name, module in model.base_model.model.named_modules() if hasattr(module, "lora_A")}
    assert len(lora_layers) == 4 * 7  # 4 decoder layers x q, k, v, o, gate, up, down
    assert all(LORA_TARGET.fullmatch(name) for name in lora_layers), sorted(lora_layers)
    saved_copies = {
        name.removesuffix(".modules_to_save.default")
        for name, _ in model.base_model.model.named_modules()
        if name.endswith(".modules_to_save.default")
    }
    assert saved_copies == {
        "model.multi_modal_projector",
        "model.language_model.layers.0.self_attn.cross_attn",
        "model.language_model.layers.2.self_attn.cross_attn",
    }
    for name, parameter in model.named_parameters():
        trains = "lora_" in name or ".modules_to_save.default." in name
        assert parameter.requires_grad == trains, name
        assert not ("lora_" in name and ("cross_attn" in name or "vision_tower" in name)), name
    vision = decoder_lora_config(tiny_model(tiny_tokenizer), train_vision_tower=True)
    assert vision.modules_to_save == ["multi_modal_projector", "cross_attn", "vision_tower"]
    with pytest.raises(ValueError, match="`target_modules` is set by `decoder_lora_config`"):
        decoder_lora_config(base, target_modules=["q_proj"])


def test_adapter_save_and_load_round_trip_gives_the_same_logits(tiny_tokenizer, tmp_path):
    model = lora_model(tiny_tokenizer)
    inputs = inputs_with_video(tiny_tokenizer)
    expected = logits(model, inputs)
    base_logits = logits(activate_hybrid_layers(tiny_model(tiny_tokenizer)), inputs)
    assert (expected - base_logits).abs().max() > 1e-2  # the adapter matters
    model.save_pretrained(tmp_path)
    saved = peft.utils.load_peft_weights(str(tmp_path))
    assert any(".cross_attn.kv_proj." in name for name in saved)  # the fully trained hybrid parameters travel too
    assert any("multi_modal_projector" in name for name in saved)
    assert not any(name.startswith("base_model.model.lm_head") or "vision_tower" in name for name in saved)

    loaded = peft.PeftModel.from_pretrained(activate_hybrid_layers(tiny_model(tiny_tokenizer)), tmp_path)
    torch.testing.assert_close(logits(loaded, inputs), expected, rtol=0, atol=0)


def test_merged_adapter_gives_the_same_logits(tiny_tokenizer, tmp_path):
    model = lora_model(tiny_tokenizer)
    inputs = inputs_with_video(tiny_tokenizer)
    expected = logits(model, inputs)
    merged = model.merge_and_unload()
    assert type(merged) is SlowFastForConditionalGeneration
    assert not any("lora_" in name or "modules_to_save" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, inputs), expected, rtol=0, atol=1e-5)
    merged.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    torch.testing.assert_close(logits(reloaded, inputs), expected, rtol=0, atol=1e-5)


def test_trainer_trains_lora_and_hybrid_copies_with_their_learning_rates(tiny_tokenizer, tmp_path):
    write_clips(tmp_path / "clips", [8])
    annotation_file = write_annotations(
        tmp_path / "train.json",
        [video_entry("clips/clip0.mp4", "<video>\nwhat happens?", "the red square moves", "where?", "right")],
    )
    base = activate_hybrid_layers(tiny_model(tiny_tokenizer))
    model = peft.get_peft_model(base, decoder_lora_config(base, r=4, lora_alpha=8))
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    processor = tiny_processor(tiny_tokenizer)
    trainer = SlowFastTrainer(
        model=model,
        args=SlowFastTrainingArguments(
            output_dir=str(tmp_path / "out"),
            use_cpu=True,
            report_to="none",
            disable_tqdm=True,
            max_steps=3,
            learning_rate=1e-3,
            hybrid_learning_rate=1e-2,
            lr_scheduler_type="constant",
        ),
        train_dataset=VideoConversationDataset(annotation_file),
        data_collator=SlowFastDataCollator(processor),
    )
    trainer.train()
    group_of = {id(parameter): group for group in trainer.optimizer.param_groups for parameter in group["params"]}
    for name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, before[name])
        if parameter.requires_grad:
            assert group_of[id(parameter)]["lr"] == (1e-2 if is_hybrid_parameter(name) else 1e-3), name
            assert changed or name.endswith("lora_A.default.weight"), name  # lora_B starts at 0, so A moves later
        else:
            assert not changed and id(parameter) not in group_of, name
    hybrid_copies = [name for name, p in model.named_parameters() if p.requires_grad and is_hybrid_parameter(name)]
    assert len(hybrid_copies) == 10 and all(".modules_to_save.default." in name for name in hybrid_copies)


def test_train_script_with_lora_saves_a_loadable_adapter(tiny_tokenizer, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "model", tiny_tokenizer)
    write_clips(tmp_path / "data" / "clips", [6, 9])
    annotation_file = write_annotations(
        tmp_path / "data" / "train.jsonl",
        [
            video_entry("clips/clip0.mp4", "<video>\nwhat happens?", "the red square moves"),
            video_entry("clips/clip1.mp4", "<video>\nhow many?", "one", "sure?", "red"),
        ],
    )
    output_dir = tmp_path / "out"
    result = run_train_script(
        [
            f"--model_name_or_path={checkpoint}",
            f"--annotation_file={annotation_file}",
            f"--output_dir={output_dir}",
            "--lora_rank=4",
            "--max_steps=2",
            "--per_device_train_batch_size=2",
            "--learning_rate=1e-2",
            "--hybrid_learning_rate=1e-2",
            "--use_cpu",
            "--report_to=none",
            "--save_strategy=no",
        ]
    )
    assert "trainable parameters" in result.stdout
    assert (output_dir / "adapter_config.json").is_file() and (output_dir / "processor_config.json").is_file()
    base = SlowFastForConditionalGeneration.from_pretrained(checkpoint)
    inputs = inputs_with_video(tiny_tokenizer)
    base_logits = logits(base, inputs)
    adapted = peft.PeftModel.from_pretrained(base, output_dir)
    assert (logits(adapted, inputs) - base_logits).abs().max() > 0
