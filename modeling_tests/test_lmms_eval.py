"""
The lmms-eval model `slowfast_hf` (`slowfast_hf.evaluation`), run by the stock lmms-eval command in a subprocess on
a local, offline lmms-eval task (YAML + JSON lines) of real mp4 clips and a tiny model saved with `save_pretrained`.
Its scores must equal the accuracy computed here with the package's own `generate` / forward pass, one question at a
time; batch sizes 1 and 4 must give the same answers; a missing video must fail the run, naming it.

lmms-eval pulls torchvision, which cannot load beside the CPU torch wheel, so it lives in its own environment:
`make test-eval` (modeling_tests/run_eval_tests.sh) builds it and runs this module; elsewhere it is skipped.
"""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip(
    "lmms_eval", reason="lmms-eval is not installed here; `make test-eval` runs this module in its own environment"
)

import torch  # noqa: E402
from conftest import activate_hybrid_layers, tiny_text_config, tiny_vision_config, train_tiny_tokenizer  # noqa: E402
from lmms_eval.api.instance import Instance  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2ForCausalLM, SiglipVisionModel  # noqa: E402
from video_fixtures import write_video  # noqa: E402

from slowfast_hf import SlowFastForConditionalGeneration, SlowFastProcessor, SlowFastVideoProcessor  # noqa: E402
from slowfast_hf.evaluation.lmms_model import SlowFastLMMS  # noqa: E402
from slowfast_hf.training import SlowFastDataCollator  # noqa: E402

NUM_FRAMES = 8  # the checkpoint's video processor setting
CLIP_FRAMES = (4, 6, 10, 16, 24)  # sampled to 4, 6, 8, 8 and 8 frames: different frame counts in one batch
OPEN_QUESTIONS = ("what happens in the video?", "which frame shows the square?", "describe the video.")
ANSWERS = ("red", "blue", "green")
CHOICES = ["red", "green", "blue", "yellow"]
MAX_NEW_TOKENS = 6
UNTIL = "."
TRAINING_STEPS, LEARNING_RATE = 12, 3e-3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, clips) -> Path:
    """A tiny slow-fast model (hybrid layers active) and its processor, fine-tuned for a few steps on the open
    questions (so that some of its answers are right), saved like a Hub checkpoint."""
    folder = tmp_path_factory.mktemp("checkpoint")
    tokenizer = train_tiny_tokenizer()
    torch.manual_seed(0)
    text_config = tiny_text_config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    model = SlowFastForConditionalGeneration.from_vision_text_pretrained(
        SiglipVisionModel(tiny_vision_config()),
        Qwen2ForCausalLM(text_config),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        hybrid_layers=[0, 2],
        fast_temporal_stride=2,
    )
    activate_hybrid_layers(model)
    video_processor = SlowFastVideoProcessor(size={"height": 32, "width": 32}, num_frames=NUM_FRAMES)
    processor = SlowFastProcessor.from_model_config(model.config, video_processor, tokenizer)
    fine_tune(model, processor, open_docs(clips), steps=TRAINING_STEPS)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def fine_tune(model, processor, rows: list[dict], steps: int) -> None:
    conversations = [
        [
            {
                "role": "user",
                "content": [{"type": "video", "path": row["video"]}, {"type": "text", "text": row["question"]}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]},
        ]
        for row in rows
    ]
    batch = SlowFastDataCollator(processor)(conversations)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    return [write_video(folder / f"clip{n}.mp4", n, fps=8, height=32, width=32).path for n in CLIP_FRAMES]


def open_docs(clips: list[Path]) -> list[dict]:
    """Open questions, 2 or 3 about each clip (lmms-eval keeps the file's order as doc ids)."""
    docs = []
    for index, clip in enumerate(clips):
        for question in OPEN_QUESTIONS[: 3 if index < 3 else 2]:
            docs.append({"video": str(clip), "question": question, "answer": ANSWERS[len(docs) % len(ANSWERS)]})
    return docs


def choice_docs(clips: list[Path]) -> list[dict]:
    question = "what colour is the square?"
    return [
        {"video": str(clip), "question": question, "choices": CHOICES, "label": i % 4} for i, clip in enumerate(clips)
    ]


def write_tasks(folder: Path, open_rows: list[dict], choice_rows: list[dict]) -> Path:
    """Two lmms-eval tasks reading local JSON lines files: `sf_open` (generate_until, exact match) and `sf_choice`
    (multiple choice scored by loglikelihood)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("open", open_rows), ("choice", choice_rows)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = (
        "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {path}\ntest_split: test\n"
        "doc_to_visual: video\ndoc_to_text: question\n"
    )
    (folder / "sf_open.yaml").write_text(
        "task: sf_open\n"
        + common.format(path=folder / "open.jsonl")
        + "output_type: generate_until\ndoc_to_target: answer\n"
        + f"generation_kwargs:\n  max_new_tokens: {MAX_NEW_TOKENS}\n  until: ['{UNTIL}']\n  do_sample: false\n"
        + "  temperature: 0\n  num_beams: 1\n"
        + "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (folder / "sf_choice.yaml").write_text(
        "task: sf_choice\n"
        + common.format(path=folder / "choice.jsonl")
        + "output_type: multiple_choice\ndoc_to_choice: choices\ndoc_to_target: label\n"
        + "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return folder


def run_lmms_eval(
    checkpoint: Path, tasks: Path, output: Path, batch_size: int, model_args: str = "", task_names="sf_open,sf_choice"
):
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(output / "hf_home"),
        TOKENIZERS_PARALLELISM="false",
    )
    command = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "slowfast_hf",
        "--model_args",
        f"pretrained={checkpoint}{model_args}",
        "--tasks",
        task_names,
        "--include_path",
        str(tasks),
        "--batch_size",
        str(batch_size),
        "--device",
        "cpu",
        "--output_path",
        str(output),
        "--log_samples",
    ]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=600)


def read_run(output: Path, tasks=("sf_open", "sf_choice")) -> tuple[dict, dict[str, dict[int, dict]]]:
    """lmms-eval's results JSON and, per task, its logged samples by doc id."""
    (results_file,) = output.rglob("*_results.json")
    samples = {}
    for task in tasks:
        (samples_file,) = output.rglob(f"*_samples_{task}.jsonl")
        rows = [json.loads(line) for line in samples_file.read_text().splitlines()]
        samples[task] = {row["doc_id"]: row for row in rows}
    return json.loads(results_file.read_text()), samples


def load_reference(checkpoint: Path):
    return AutoModelForImageTextToText.from_pretrained(checkpoint).eval(), AutoProcessor.from_pretrained(checkpoint)


def reference_prompt(processor, row: dict):
    """The processor's own path: the chat template, its video loading and placeholder expansion."""
    content = [{"type": "video", "path": row["video"]}, {"type": "text", "text": row["question"]}]
    return processor.apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )


@torch.inference_mode()
def reference_answers(checkpoint: Path, rows: list[dict]) -> list[str]:
    """Each open question answered alone with `generate`, cut at the task's stop string."""
    model, processor = load_reference(checkpoint)
    answers = []
    for row in rows:
        inputs = reference_prompt(processor, row)
        output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        text = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
        answers.append(text.split(UNTIL, 1)[0])
    return answers


@torch.inference_mode()
def reference_choice_scores(checkpoint: Path, rows: list[dict]) -> list[list[float]]:
    """Per question, the log-likelihood of each choice (after lmms-eval's " " delimiter), one forward pass each."""
    model, processor = load_reference(checkpoint)
    all_scores = []
    for row in rows:
        inputs = reference_prompt(processor, row)
        scores = []
        for choice in row["choices"]:
            continuation = processor.tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            input_ids = torch.cat([inputs["input_ids"], torch.tensor([continuation])], dim=1)
            logits = model(
                input_ids=input_ids,
                pixel_values_videos=inputs["pixel_values_videos"],
                video_num_frames=inputs["video_num_frames"],
            ).logits[0, -len(continuation) - 1 : -1]
            scores.append(logits.log_softmax(-1).gather(-1, torch.tensor(continuation)[:, None]).sum().item())
        all_scores.append(scores)
    return all_scores


def exact_match(answers: list[str], rows: list[dict]) -> float:
    return sum(answer == row["answer"] for answer, row in zip(answers, rows)) / len(rows)


def choice_accuracy(all_scores: list[list[float]], rows: list[dict]) -> float:
    return sum(max(range(len(s)), key=s.__getitem__) == row["label"] for s, row in zip(all_scores, rows)) / len(rows)


def test_lmms_eval_scores_equal_our_own_generate_at_batch_sizes_1_and_4(checkpoint, clips, tmp_path):
    open_rows, choice_rows = open_docs(clips), choice_docs(clips)
    tasks = write_tasks(tmp_path / "tasks", open_rows, choice_rows)
    answers = reference_answers(checkpoint, open_rows)
    choice_scores = reference_choice_scores(checkpoint, choice_rows)
    print(
        f"reference: exact match {exact_match(answers, open_rows)}, accuracy {choice_accuracy(choice_scores, choice_rows)}"
    )

    runs = {}
    for batch_size in (1, 4):
        output = tmp_path / f"batch{batch_size}"
        result = run_lmms_eval(checkpoint, tasks, output, batch_size)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        assert "Model Responding" in result.stderr  # lmms-eval's progress bar, advanced by the plugin
        print(f"batch size {batch_size}:\n" + result.stdout[-2000:])
        runs[batch_size] = read_run(output)

    for batch_size, (results, samples) in runs.items():
        assert results["results"]["sf_open"]["exact_match,none"] == pytest.approx(exact_match(answers, open_rows))
        assert results["results"]["sf_choice"]["acc,none"] == pytest.approx(
            choice_accuracy(choice_scores, choice_rows)
        )
        assert [samples["sf_open"][doc_id]["filtered_resps"] for doc_id in range(len(open_rows))] == answers
        for doc_id, scores in enumerate(choice_scores):
            # the plugin returns negative log-likelihoods (lmms-eval picks the smallest); the log stores them as text
            logged = [-float(value) for value, _ in samples["sf_choice"][doc_id]["filtered_resps"]]
            assert logged == pytest.approx(scores, abs=1e-4)


def test_a_missing_video_fails_the_run_naming_it(checkpoint, clips, tmp_path):
    """lmms-eval's command reports an error during evaluation, writes no results, and exits with status 0 unless
    `--verbosity DEBUG` is given (then it re-raises)."""
    open_rows, choice_rows = open_docs(clips), choice_docs(clips)
    missing = str(tmp_path / "missing.mp4")
    open_rows[4]["video"] = missing
    tasks = write_tasks(tmp_path / "tasks", open_rows, choice_rows)
    result = run_lmms_eval(checkpoint, tasks, tmp_path / "out", batch_size=4, task_names="sf_open")
    output = result.stdout + result.stderr
    assert f"task 'sf_open', doc 4 (videos ['{missing}']): cannot read video '{missing}'" in output, output[-4000:]
    assert "Error during evaluation" in output
    assert not list((tmp_path / "out").rglob("*_results.json"))


def test_recorded_failures_are_left_out_of_the_scores_and_listed(checkpoint, clips, tmp_path):
    open_rows, choice_rows = open_docs(clips), choice_docs(clips)
    missing = str(tmp_path / "missing.mp4")
    for doc_id in (1, 5):
        open_rows[doc_id]["video"] = missing
    tasks = write_tasks(tmp_path / "tasks", open_rows, choice_rows)
    kept = [row for row in open_rows if row["video"] != missing]
    expected = exact_match(reference_answers(checkpoint, kept), kept)

    output = tmp_path / "out"
    result = run_lmms_eval(
        checkpoint, tasks, output, batch_size=4, model_args=",record_failures=True", task_names="sf_open"
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Error during evaluation" not in result.stderr, result.stderr[-4000:]
    assert "slowfast_hf: 2 request(s) of 2 document(s) failed" in result.stdout
    assert "the scores above leave out 2 document(s)" in result.stdout.splitlines()[-1]
    results, samples = read_run(output, tasks=("sf_open",))
    assert sorted(samples["sf_open"]) == [i for i, row in enumerate(open_rows) if row["video"] != missing]
    assert results["results"]["sf_open"]["exact_match,none"] == pytest.approx(expected)


class LocalTask:
    """What the plugin sees of an lmms-eval task: `doc_to_visual` bound to it, and its requests in `_instances`."""

    def __init__(self):
        self._instances = []

    def doc_to_visual(self, doc):
        return [doc["video"]]


def instances(rows: list[dict], task: str, gen_kwargs: dict, task_object=None) -> list[Instance]:
    task_object = task_object or LocalTask()
    task_object._instances = [
        Instance(
            request_type="generate_until",
            arguments=(row["question"], dict(gen_kwargs), task_object.doc_to_visual, doc_id, task, "test"),
            idx=0,
            metadata={"task": task, "doc_id": doc_id, "repeats": 1},
        )
        for doc_id, row in enumerate(rows)
    ]
    return list(task_object._instances)


def test_each_video_is_read_once_in_a_background_thread_and_encoded_once(checkpoint, clips, monkeypatch):
    rows = open_docs(clips)  # 12 questions about 5 clips
    lm = SlowFastLMMS(pretrained=str(checkpoint), batch_size=4, device="cpu")
    lm.task_dict = {"sf_open": {"test": rows}}
    reads, encodes = [], []
    read_video, get_video_features = lm._read_video, lm.model.get_video_features
    monkeypatch.setattr(
        lm, "_read_video", lambda path: reads.append((path, threading.current_thread())) or read_video(path)
    )
    monkeypatch.setattr(
        lm.model,
        "get_video_features",
        lambda *args, **kwargs: encodes.append(1) or get_video_features(*args, **kwargs),
    )
    answers = lm.generate_until(instances(rows, "sf_open", {"max_new_tokens": 3}))
    assert len(answers) == len(rows) and all(isinstance(answer, str) for answer in answers)
    assert sorted(path for path, _ in reads) == sorted(map(str, clips))
    assert all(thread is not threading.main_thread() for _, thread in reads)
    assert len(encodes) == len(clips)


def test_a_failed_generation_raises_or_is_recorded_and_left_out(checkpoint, clips, monkeypatch):
    rows = open_docs(clips)
    gen_kwargs = {"max_new_tokens": 3}
    lm = SlowFastLMMS(pretrained=str(checkpoint), batch_size=4, device="cpu")
    lm.task_dict = {"sf_open": {"test": rows}}
    expected = lm.generate_until(instances(rows, "sf_open", gen_kwargs))
    generate = lm._generate

    def generate_failing_on_doc_2(batch, *args):
        if any(request.doc_id == 2 for request in batch):
            raise RuntimeError("out of memory")
        return generate(batch, *args)

    monkeypatch.setattr(lm, "_generate", generate_failing_on_doc_2)
    with pytest.raises(
        RuntimeError,
        match=r"generate failed for .*task 'sf_open', doc 2 \(videos \['[^']*clip4.mp4'\]\).*: out of memory",
    ):
        lm.generate_until(instances(rows, "sf_open", gen_kwargs))

    lm.record_failures = True
    task = LocalTask()
    answers = lm.generate_until(instances(rows, "sf_open", gen_kwargs, task))
    assert answers[:2] + answers[3:] == expected[:2] + expected[3:]  # the batch's other requests, run one by one
    assert [(failure.doc_id, failure.stage) for failure in lm.failures] == [(2, "generate")]
    assert sorted(instance.doc_id for instance in task._instances) == [i for i in range(len(rows)) if i != 2]


@pytest.mark.parametrize(
    "gen_kwargs, message",
    [
        (
            {"max_new_tokens": 3, "image_aspect_ratio": "pad"},
            "generation kwargs ['image_aspect_ratio'] are not supported",
        ),
        ({"do_sample": True, "temperature": 0}, "sampling needs a temperature > 0"),
        ({"max_new_tokens": 0}, "`max_new_tokens` must be an integer >= 1"),
        ({"until": [""]}, "`until` must be non-empty strings"),
    ],
)
def test_unsupported_generation_kwargs_raise_naming_the_document(checkpoint, clips, gen_kwargs, message):
    rows = open_docs(clips)[:1]
    lm = SlowFastLMMS(pretrained=str(checkpoint), device="cpu")
    lm.task_dict = {"sf_open": {"test": rows}}
    with pytest.raises(ValueError, match="task 'sf_open', doc 0") as error:
        lm.generate_until(instances(rows, "sf_open", gen_kwargs))
    assert message in str(error.value)


@pytest.mark.parametrize(
    "model_args, message",
    [
        ({"batch_size": "auto"}, "`batch_size` must be an integer >= 1, got 'auto'"),
        ({"num_frames": 0}, "`num_frames` must be an integer >= 1"),
        ({"dtype": "float64"}, "`dtype` must be one of"),
        ({"record_failures": "yes"}, "`record_failures` must be True or False"),
    ],
)
def test_bad_model_args_raise(checkpoint, model_args, message):
    with pytest.raises(ValueError, match=message):
        SlowFastLMMS(pretrained=str(checkpoint), device="cpu", **model_args)
