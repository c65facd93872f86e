"""Fine-tuning with the HF Trainer: annotation dataset, collator and labels, freezing presets, the hybrid learning
rate, loss going down, activation checkpointing and resuming from a checkpoint."""

import json

import pytest
import torch
import training_fixtures
from conftest import IMAGE_SIZE
from test_modeling import activate_hybrid_layers
from training_fixtures import (
    NUM_FRAMES,
    tiny_model,
    tiny_processor,
    video_entry,
    write_annotations,
    write_clips,
)
from transformers import TrainingArguments

from slowfast_hf.processing_slowfast import IGNORE_INDEX
from slowfast_hf.training import (
    SlowFastDataCollator,
    SlowFastTrainer,
    SlowFastTrainingArguments,
    VideoConversationDataset,
    freeze_for_training,
    is_hybrid_parameter,
    split_hybrid_parameter_groups,
)

one_thread = training_fixtures.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")

QUESTION = "<video>\nwhat happens in the video?"
ANSWER = "a red square moves from left to right."


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A folder `clips/` holding clip0.mp4 .. clip3.mp4 (6, 8, 10 and 12 frames) and its parent folder."""
    root = tmp_path_factory.mktemp("training_data")
    write_clips(root / "clips", [6, 8, 10, 12])
    return root


def training_arguments(output_dir, **overrides) -> SlowFastTrainingArguments:
    kwargs = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        seed=0,
    )
    kwargs.update(overrides)
    return SlowFastTrainingArguments(**kwargs)


def make_trainer(tokenizer, annotation_file, output_dir, preset="decoder", model=None, **overrides) -> SlowFastTrainer:
    """A trainer of the tiny model (`model` if given) frozen with `preset` (left as it is when None)."""
    model = tiny_model(tokenizer) if model is None else model
    if preset is not None:
        freeze_for_training(model, preset)
    processor = tiny_processor(tokenizer)
    return SlowFastTrainer(
        model=model,
        args=training_arguments(output_dir, **overrides),
        train_dataset=VideoConversationDataset(annotation_file),
        data_collator=SlowFastDataCollator(processor),
        processing_class=processor,
    )


def parameter_state(model) -> dict[str, torch.Tensor]:
    """A copy of every parameter, by name."""
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


# dataset


def test_annotations_become_chat_messages(clips, tmp_path):
    entries = [
        video_entry("clips/clip0.mp4", QUESTION, ANSWER, id="first"),
        video_entry(str(clips / "clips" / "clip1.mp4"), "look: <video>\nand answer", "yes", "sure?", "sure"),
        video_entry(None, "a question without video", "no"),
    ]
    for suffix in (".json", ".jsonl"):
        annotation_file = write_annotations(clips / f"train{suffix}", entries)
        dataset = VideoConversationDataset(annotation_file)
        assert len(dataset) == 3
        assert dataset[0] == [
            {
                "role": "user",
                "content": [
                    {"type": "video", "path": str(clips / "clips" / "clip0.mp4")},
                    {"type": "text", "text": "what happens in the video?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]},
        ]
        assert dataset[1][0]["content"] == [
            {"type": "text", "text": "look: "},
            {"type": "video", "path": str(clips / "clips" / "clip1.mp4")},  # absolute paths stay as they are
            {"type": "text", "text": "and answer"},
        ]
        assert [message["role"] for message in dataset[1]] == ["user", "assistant", "user", "assistant"]
        assert dataset[2] == [
            {"role": "user", "content": [{"type": "text", "text": "a question without video"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "no"}]},
        ]
    # relative paths against `video_root` when given, and LLaVA-style `<image>` placeholders for videos on request
    elsewhere = write_annotations(tmp_path / "train.json", [video_entry("clip2.mp4", "<image>\nwhat?", "this")])
    dataset = VideoConversationDataset(elsewhere, video_root=clips / "clips", video_placeholder="<image>")
    assert dataset[0][0]["content"][0] == {"type": "video", "path": str(clips / "clips" / "clip2.mp4")}


GOOD = video_entry("clips/clip0.mp4", QUESTION, ANSWER)


@pytest.mark.parametrize(
    "entry, message",
    [
        (["not", "an", "object"], r"entry 1 must be a JSON object"),
        ({"video": "clips/clip0.mp4"}, r"entry 1: `conversations` must be a non-empty list"),
        ({"conversations": []}, r"entry 1: `conversations` must be a non-empty list"),
        (video_entry(None, "hi", 3), r"entry 1: `conversations\[1\]` must be an object with a string \"value\""),
        (
            {"conversations": [{"from": "gpt", "value": "hi"}]},
            r"entry 1: `conversations\[0\]` has \"from\" 'gpt'.*must be 'human'",
        ),
        (
            {"id": "x7", "conversations": [{"from": "human", "value": "a"}, {"from": "user", "value": "b"}]},
            r"entry 1 \(id 'x7'\): `conversations\[1\]` has \"from\" 'user'",
        ),
        (video_entry(None, "hi", "hello", "and?"), r"entry 1: `conversations` ends with a \"human\" turn"),
        (video_entry(None, QUESTION, ANSWER), r"entry 1 has no `video` but its conversation holds '<video>'"),
        (video_entry("clips/clip0.mp4", "what?", "this"), r"entry 1 has a `video`.*found \[0, 0\] per turn"),
        (video_entry("clips/clip0.mp4", "<video><video>", "this"), r"entry 1 has a `video`.*found \[2, 0\]"),
        (video_entry("clips/clip0.mp4", "hi", "a", "<video>", "b"), r"entry 1 has a `video`.*\[0, 0, 1, 0\]"),
        (video_entry("", QUESTION, ANSWER), r"entry 1: `video` must be a non-empty path string"),
        (video_entry("clips/missing.mp4", QUESTION, ANSWER), r"entry 1: `video` '.*missing.mp4' does not exist"),
        ({**GOOD, "image": "picture.png"}, r"entry 1 has an `image` field"),
        (video_entry("clips/clip0.mp4", QUESTION, "a <image> here"), r"entry 1: `conversations\[1\]` holds '<image>'"),
        (video_entry(None, "see <image>", "ok"), r"entry 1: `conversations\[0\]` holds '<image>'.*only '<video>'"),
    ],
)
def test_malformed_entries_are_refused_with_their_index_and_field(clips, entry, message):
    annotation_file = write_annotations(clips / "bad.json", [GOOD, entry])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        VideoConversationDataset(annotation_file)


def test_malformed_annotation_files_are_refused(clips, tmp_path):
    with pytest.raises(ValueError, match=r"\.json or \.jsonl"):
        VideoConversationDataset(tmp_path / "train.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoConversationDataset(tmp_path / "missing.json")
    (tmp_path / "object.json").write_text(json.dumps({"conversations": []}))
    with pytest.raises(ValueError, match="JSON list of entries"):
        VideoConversationDataset(tmp_path / "object.json")
    (tmp_path / "lines.jsonl").write_text(json.dumps(GOOD) + "\n{broken\n")
    with pytest.raises(ValueError, match=r"lines.jsonl, line 2: not valid JSON"):
        VideoConversationDataset(tmp_path / "lines.jsonl")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="holds no entries"):
        VideoConversationDataset(tmp_path / "empty.json")
    with pytest.raises(FileNotFoundError, match="`video_root`"):
        VideoConversationDataset(write_annotations(clips / "good.json", [GOOD]), video_root=tmp_path / "nowhere")


# collator and labels


def _replies(tokenizer, labels: torch.Tensor) -> str:
    return tokenizer.decode(labels[labels != IGNORE_INDEX]).replace(" ", "").replace("▁", "")


def test_collator_masks_everything_but_the_assistant_replies_of_multi_turn_conversations(tiny_tokenizer, clips):
    annotation_file = write_annotations(
        clips / "multi_turn.json",
        [
            video_entry(
                "clips/clip3.mp4", QUESTION, "the red square", "what colour?", "red", "where?", "near the end"
            ),
            video_entry(None, "a question without video", "red"),
        ],
    )
    dataset = VideoConversationDataset(annotation_file)
    processor = tiny_processor(tiny_tokenizer)
    processor.tokenizer.padding_side = "left"  # the collator pads on the right whatever the tokenizer says
    collator = SlowFastDataCollator(processor)
    batch = collator([dataset[0], dataset[1]])

    assert set(batch) == {"input_ids", "attention_mask", "labels", "pixel_values_videos", "video_num_frames"}
    assert batch["pixel_values_videos"].shape == (NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["video_num_frames"].tolist() == [NUM_FRAMES]
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert input_ids.shape == attention_mask.shape == labels.shape and input_ids.shape[0] == 2
    assert attention_mask[0].all() and not attention_mask[1].all()
    assert attention_mask[1].tolist() == sorted(attention_mask[1].tolist(), reverse=True)  # right padding
    assert _replies(tiny_tokenizer, labels[0]) == "theredsquare<|im_end|>red<|im_end|>neartheend<|im_end|>"
    assert _replies(tiny_tokenizer, labels[1]) == "red<|im_end|>"
    assert (labels[attention_mask == 0] == IGNORE_INDEX).all()
    assert (labels[input_ids == processor.video_token_id] == IGNORE_INDEX).all()
    assert int((input_ids == processor.video_token_id).sum()) > 0
    kept = labels != IGNORE_INDEX
    assert torch.equal(labels[kept], input_ids[kept])
    # each sample alone gives the same tokens and labels as in the padded batch
    for index in range(2):
        alone = collator([dataset[index]])
        length = int(attention_mask[index].sum())
        assert torch.equal(alone["input_ids"][0], input_ids[index, :length])
        assert torch.equal(alone["labels"][0], labels[index, :length])


def test_collator_needs_a_pad_token(tiny_tokenizer):
    from conftest import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer()
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="pad token"):
        SlowFastDataCollator(tiny_processor(tokenizer))
    with pytest.raises(ValueError, match="SlowFastProcessor"):
        SlowFastDataCollator(tiny_tokenizer)


# freezing presets


def test_freezing_presets(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer)
    names = [name for name, _ in model.named_parameters()]
    hybrid = {name for name in names if ".cross_attn." in name}
    projector = {name for name in names if name.startswith("model.multi_modal_projector.")}
    vision = {name for name in names if name.startswith("model.vision_tower.")}
    decoder = {name for name in names if name.startswith(("model.language_model.", "lm_head."))}
    assert len(hybrid) == 10 and projector and vision and hybrid < decoder  # 2 hybrid layers x 5 parameters
    assert {name for name in names if is_hybrid_parameter(name)} == hybrid

    def trainable():
        return {name for name, parameter in model.named_parameters() if parameter.requires_grad}

    assert set(freeze_for_training(model, "projector_and_hybrid")) == trainable() == projector | hybrid
    assert set(freeze_for_training(model, "decoder")) == trainable() == projector | decoder
    assert set(freeze_for_training(model, "all")) == trainable() == set(names)
    assert set(freeze_for_training(model, "projector_and_hybrid", train_vision_tower=True)) == (
        projector | hybrid | vision
    )
    assert set(freeze_for_training(model, "decoder", train_vision_tower=True)) == set(names)
    assert freeze_for_training(model, "decoder") == [name for name in names if name in trainable()]  # in order
    with pytest.raises(ValueError, match="`preset` must be one of"):
        freeze_for_training(model, "projector")
    with pytest.raises(ValueError, match="slow-fast model"):
        freeze_for_training(torch.nn.Linear(2, 2), "all")


# optimizer parameter groups


def test_hybrid_parameters_get_their_own_learning_rate(tiny_tokenizer, clips, tmp_path):
    annotation_file = write_annotations(clips / "one.json", [GOOD])
    trainer = make_trainer(
        tiny_tokenizer,
        annotation_file,
        tmp_path,
        preset="decoder",
        learning_rate=1e-3,
        hybrid_learning_rate=5e-2,
        weight_decay=0.1,
        warmup_steps=2,
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    groups = trainer.optimizer.param_groups
    group_of = {id(parameter): group for group in groups for parameter in group["params"]}
    trainable = {name: parameter for name, parameter in trainer.model.named_parameters() if parameter.requires_grad}
    assert len(group_of) == sum(len(group["params"]) for group in groups) == len(trainable)  # each param once
    for name, parameter in trainable.items():
        group = group_of[id(parameter)]
        assert group["initial_lr"] == (5e-2 if is_hybrid_parameter(name) else 1e-3), name  # peak (warm-up: lr 0)
        no_decay = name.endswith("bias") or "norm" in name
        assert group["weight_decay"] == (0.0 if no_decay else 0.1), name
    assert sorted((group["initial_lr"], group["weight_decay"]) for group in groups) == [
        (1e-3, 0.0),
        (1e-3, 0.1),
        (5e-2, 0.0),
        (5e-2, 0.1),
    ]
    # the schedule scales both learning rates alike: warm-up from 0, then linear decay
    assert sorted(trainer.lr_scheduler.base_lrs) == [1e-3, 1e-3, 5e-2, 5e-2]
    for _ in range(3):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    rates = {group["lr"] / group["initial_lr"] for group in groups}
    assert len(rates) == 1 and 0 < rates.pop() < 1

    # without `hybrid_learning_rate` the optimizer is the plain Trainer's
    plain = make_trainer(tiny_tokenizer, annotation_file, tmp_path, preset="decoder", weight_decay=0.1)
    plain.create_optimizer()
    assert sorted(len(group["params"]) for group in plain.optimizer.param_groups) == sorted(
        [sum(len(group["params"]) for group in groups if group["weight_decay"] == wd) for wd in (0.0, 0.1)]
    )
    assert {group["lr"] for group in plain.optimizer.param_groups} == {1e-3}


def test_hybrid_learning_rate_errors(tiny_tokenizer, clips, tmp_path):
    annotation_file = write_annotations(clips / "one.json", [GOOD])
    for bad in (0.0, -1e-3):
        with pytest.raises(ValueError, match="`hybrid_learning_rate` must be a number > 0"):
            training_arguments(tmp_path, hybrid_learning_rate=bad)
    model = tiny_model(tiny_tokenizer)
    with pytest.raises(ValueError, match="an optimizer was passed"):
        SlowFastTrainer(
            model=model,
            args=training_arguments(tmp_path, hybrid_learning_rate=1e-2),
            optimizers=(torch.optim.SGD(model.parameters(), lr=0.1), None),
        )
    frozen_hybrid = tiny_model(tiny_tokenizer)
    for name, parameter in frozen_hybrid.named_parameters():
        parameter.requires_grad_(not is_hybrid_parameter(name))
    trainer = make_trainer(
        tiny_tokenizer, annotation_file, tmp_path, model=frozen_hybrid, preset=None, hybrid_learning_rate=1e-2
    )
    with pytest.raises(ValueError, match="holds no hybrid cross-attention parameters"):
        trainer.create_optimizer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    optimizer.step()
    with pytest.raises(ValueError, match="already taken a step"):
        split_hybrid_parameter_groups(optimizer, model, 1e-2)


# training runs


def test_loss_falls_when_memorising_an_answer(tiny_tokenizer, clips, tmp_path):
    annotation_file = write_annotations(clips / "memorise.json", [GOOD])
    trainer = make_trainer(
        tiny_tokenizer,
        annotation_file,
        tmp_path,
        preset="decoder",
        per_device_train_batch_size=1,
        max_steps=30,
        learning_rate=3e-3,
        hybrid_learning_rate=1e-2,
        lr_scheduler_type="constant",
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 30
    assert losses[-1] < 0.1 * losses[0], losses
    alphas = [p for n, p in trainer.model.named_parameters() if n.endswith("gate_alpha")]
    assert all(alpha.item() != 0 for alpha in alphas)  # the hybrid layers' gates opened


def test_projector_and_hybrid_preset_trains_only_those(tiny_tokenizer, clips, tmp_path):
    """Text-only batches reach no trainable parameter under this preset; training goes on through them."""
    annotation_file = write_annotations(
        clips / "mixed.json",
        [GOOD, video_entry(None, "a question without video", "yes"), video_entry("clips/clip1.mp4", QUESTION, "no")],
    )
    trainer = make_trainer(
        tiny_tokenizer,
        annotation_file,
        tmp_path,
        preset="projector_and_hybrid",
        per_device_train_batch_size=1,
        max_steps=6,
        hybrid_learning_rate=1e-2,
    )
    before = parameter_state(trainer.model)
    trainer.train()
    after = parameter_state(trainer.model)
    for name, parameter in trainer.model.named_parameters():
        changed = not torch.equal(before[name], after[name])
        assert changed == parameter.requires_grad == (is_hybrid_parameter(name) or "multi_modal_projector" in name), (
            name
        )


def test_activation_checkpointing_through_the_trainer_gives_the_same_updates(tiny_tokenizer, clips, tmp_path):
    """Plain SGD, so that the parameter updates are the gradients scaled by the learning rate."""
    annotation_file = write_annotations(
        clips / "checkpointing.json",
        [GOOD, video_entry("clips/clip2.mp4", QUESTION, "it stays", "sure?", "yes"), video_entry(None, "hi", "hey")],
    )
    updates = {}
    for checkpointing in (False, True):
        model = activate_hybrid_layers(tiny_model(tiny_tokenizer))  # open the gates: non-zero hybrid gradients
        initial = parameter_state(model)
        trainer = make_trainer(
            tiny_tokenizer,
            annotation_file,
            tmp_path / str(checkpointing),
            model=model,
            preset="all",
            max_steps=2,
            optim="sgd",
            learning_rate=0.1,
            hybrid_learning_rate=0.1,
            lr_scheduler_type="constant",
            activation_checkpointing=checkpointing,
        )
        trainer.train()
        assert trainer.model.is_activation_checkpointing == checkpointing
        updates[checkpointing] = {
            name: parameter.detach() - initial[name] for name, parameter in trainer.model.named_parameters()
        }
    for name, update in updates[False].items():
        torch.testing.assert_close(updates[True][name], update, rtol=0, atol=1e-6, msg=name)
    assert any(update.abs().max() > 1e-4 for name, update in updates[False].items() if "cross_attn.kv_proj" in name)


def test_reentrant_checkpointing_is_refused_through_the_trainer(tiny_tokenizer, clips, tmp_path):
    annotation_file = write_annotations(clips / "one.json", [GOOD])
    trainer = make_trainer(
        tiny_tokenizer,
        annotation_file,
        tmp_path,
        max_steps=1,
        activation_checkpointing=True,
        activation_checkpointing_kwargs={"use_reentrant": True},
    )
    with pytest.raises(ValueError, match="only non-reentrant activation checkpointing"):
        trainer.train()


def test_resuming_from_a_checkpoint_continues_the_same_run(tiny_tokenizer, clips, tmp_path):
    """6 steps straight, and 3 steps + a restart from the step-3 checkpoint (weights, AdamW state with the hybrid
    parameter groups, schedule, data order): the same final parameters."""
    annotation_file = write_annotations(
        clips / "resume.json",
        [
            GOOD,
            video_entry("clips/clip1.mp4", QUESTION, "it moves up"),
            video_entry(None, "a question without video", "yes"),
            video_entry("clips/clip2.mp4", QUESTION, "nothing", "really?", "really"),
            video_entry("clips/clip3.mp4", QUESTION, "it turns blue"),
        ],
    )
    settings = dict(
        preset="decoder",
        max_steps=6,
        hybrid_learning_rate=1e-2,
        warmup_steps=2,
        weight_decay=0.01,
        save_strategy="steps",
        save_steps=3,
    )
    straight = make_trainer(tiny_tokenizer, annotation_file, tmp_path / "straight", **settings)
    straight.train()
    assert (tmp_path / "straight" / "checkpoint-3").is_dir()

    resumed = make_trainer(tiny_tokenizer, annotation_file, tmp_path / "resumed", **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-3"))
    assert resumed.state.global_step == 6
    assert [entry["step"] for entry in resumed.state.log_history if "loss" in entry][-3:] == [4, 5, 6]
    straight_losses = [entry["loss"] for entry in straight.state.log_history if "loss" in entry]
    resumed_losses = [entry["loss"] for entry in resumed.state.log_history if "loss" in entry]
    assert resumed_losses[-3:] == pytest.approx(straight_losses[-3:], rel=1e-5)
    final = dict(straight.model.named_parameters())
    for name, parameter in resumed.model.named_parameters():
        torch.testing.assert_close(parameter, final[name], rtol=0, atol=1e-6, msg=name)


def test_plain_training_arguments_train_without_a_hybrid_learning_rate(tiny_tokenizer, clips, tmp_path):
    annotation_file = write_annotations(clips / "one.json", [GOOD])
    model = tiny_model(tiny_tokenizer)
    freeze_for_training(model, "projector_and_hybrid")
    processor = tiny_processor(tiny_tokenizer)
    trainer = SlowFastTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1),
        train_dataset=VideoConversationDataset(annotation_file),
        data_collator=SlowFastDataCollator(processor),
    )
    trainer.train()
    assert trainer.state.global_step == 1
    assert len(trainer.optimizer.param_groups) == 2  # the plain Trainer's: with and without weight decay
