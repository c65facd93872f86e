"""Hub-ready checkpoints: the model card, `save_for_hub` folders that load in a fresh process with and without the
package (model and processor), and `push_to_hub` end to end against a fake Hub served on 127.0.0.1."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import pytest
import torch
from conftest import (
    BLOCK_SLOWFAST_HF,
    IMAGE_SIZE,
    PATCH_SIZE,
    tiny_text_config,
    tiny_vision_config,
    train_tiny_tokenizer,
)
from huggingface_hub import ModelCard
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2ForCausalLM, SiglipVisionModel
from video_fixtures import write_video

from slowfast_hf import SlowFastForConditionalGeneration, SlowFastProcessor, SlowFastVideoProcessor
from slowfast_hf.hub import create_model_card, save_for_hub
from slowfast_hf.transformers_compat import MIN_TRANSFORMERS_VERSION

NUM_FRAMES = 8
SHARD_SIZE = "100KB"  # the tiny model is ~0.5 MB: several shards
CODE_FILES = (
    "configuration_slowfast.py",
    "modeling_slowfast.py",
    "hybrid_attention.py",
    "token_builder.py",
    "visual_inputs.py",
    "slow_key_values.py",
    "processing_slowfast.py",
    "video_processing_slowfast.py",
    "video_reading.py",
)
PROCESSOR_FILES = ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
TRAINING_DATA = "Synthetic clips of coloured squares, 16 frames each (test data)."


def build_model(vision_path: str, text_path: str, tokenizer, hybrid_layers=(0, 2)) -> SlowFastForConditionalGeneration:
    torch.manual_seed(0)
    model = SlowFastForConditionalGeneration.from_vision_text_pretrained(
        vision_path,
        text_path,
        hybrid_layers=list(hybrid_layers),
        fast_temporal_stride=4,
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    with torch.no_grad():  # open the gates, so that the slow tokens change the outputs
        for name, parameter in model.named_parameters():
            if name.endswith("gate_alpha"):
                parameter.fill_(0.7)
    return model.eval()


def build_processor(model, tokenizer) -> SlowFastProcessor:
    video_processor = SlowFastVideoProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, num_frames=NUM_FRAMES)
    return SlowFastProcessor.from_model_config(model.config, video_processor, tokenizer)


def video_messages(video_path) -> list[dict]:
    content = [{"type": "video", "path": str(video_path)}, {"type": "text", "text": "what happens in the video?"}]
    return [{"role": "user", "content": content}]


def answer(model, processor, video_path) -> dict:
    """The prompt's logits and 5 greedily generated tokens."""
    inputs = processor.apply_chat_template(
        video_messages(video_path), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    return {"logits": logits, "tokens": tokens, "input_ids": inputs["input_ids"]}


@pytest.fixture(scope="module")
def base_parts(tmp_path_factory):
    """A tiny SigLIP vision encoder and Qwen2 LM (with the tokenizer) saved like Hub checkpoints, and a video."""
    root = tmp_path_factory.mktemp("hub_base_parts")
    tokenizer = train_tiny_tokenizer()
    torch.manual_seed(0)
    SiglipVisionModel(tiny_vision_config()).save_pretrained(root / "siglip-tiny")
    Qwen2ForCausalLM(tiny_text_config()).save_pretrained(root / "qwen2-tiny")
    tokenizer.save_pretrained(root / "qwen2-tiny")
    video = write_video(root / "clip.mp4", 12, height=IMAGE_SIZE, width=IMAGE_SIZE).path
    return root, tokenizer, video


@pytest.fixture(scope="module")
def hub_folder(base_parts):
    """A model built from the local base parts, saved with `save_for_hub` (sharded), and its answers."""
    root, tokenizer, video = base_parts
    model = build_model(str(root / "siglip-tiny"), str(root / "qwen2-tiny"), tokenizer)
    processor = build_processor(model, tokenizer)
    folder = root / "slowfast-tiny"
    card = save_for_hub(
        model, processor, folder, license="apache-2.0", training_data=TRAINING_DATA, max_shard_size=SHARD_SIZE
    )
    return folder, card, model, processor, answer(model, processor, video)


def card_metadata(readme_text: str) -> dict:
    assert readme_text.startswith("---\n"), readme_text[:100]
    return ModelCard(readme_text).data.to_dict()


def test_model_card_describes_the_model(base_parts):
    root, tokenizer, _ = base_parts
    model = build_model(str(root / "siglip-tiny"), str(root / "qwen2-tiny"), tokenizer)
    base_models = ["google/siglip-so400m-patch14-384", "Qwen/Qwen2-7B-Instruct"]
    card = create_model_card(
        model,
        build_processor(model, tokenizer),
        license="apache-2.0",
        base_models=base_models,
        training_data=TRAINING_DATA,
        datasets=["tiny-org/needle-videos"],
        model_id="tiny-org/slowfast-tiny",
    )
    metadata = card_metadata(str(card))
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "video-text-to-text"
    assert metadata["license"] == "apache-2.0"
    assert metadata["base_model"] == base_models
    assert metadata["datasets"] == ["tiny-org/needle-videos"]
    assert {"slow-fast", "video"} <= set(metadata["tags"])
    text = card.text
    assert "# slowfast-tiny" in text
    for base_model in base_models:
        assert f"[`{base_model}`](https://huggingface.co/{base_model})" in text
    assert "| Hybrid layers | 0, 2 (of 4)" in text
    assert f"| Frames per video | {NUM_FRAMES}, sampled evenly |" in text
    # 4x4 patch grid, slow tokens pooled 2x2: 4 per frame; fast: 8 frames averaged by 4 -> 2 frames of 2x2
    assert "| Slow tokens | 32 per video (4 per frame)" in text
    assert "| Fast tokens | 8 per video: every 1 frame(s) kept, averaged over 4, pooled 1x1" in text
    assert TRAINING_DATA in text
    assert 'AutoModelForImageTextToText.from_pretrained("tiny-org/slowfast-tiny", trust_remote_code=True)' in text
    # what remote-code users install, and how to install the package, which is on no index
    assert f'pip install "transformers>={MIN_TRANSFORMERS_VERSION}" torch einops av' in text and "not on PyPI" in text
    assert "pip install slowfast_hf" not in text
    assert "## License\n\n`apache-2.0`" in text


def test_model_card_of_a_model_without_hybrid_layers(base_parts):
    root, tokenizer, _ = base_parts
    model = build_model(str(root / "siglip-tiny"), str(root / "qwen2-tiny"), tokenizer, hybrid_layers=[])
    text = create_model_card(model, build_processor(model, tokenizer), model_id="fast-only", license="mit").text
    assert "| Hybrid layers | none of the 4 decoder layers" in text
    assert "| Slow tokens | none (no hybrid layer) |" in text
    assert "| Fast tokens | 8 per video:" in text


def test_model_card_names_the_recorded_base_models(hub_folder, base_parts):
    """`from_vision_text_pretrained` records the paths it loaded; local folders are named, but only Hub ids go in the
    `base_model` metadata (the push test checks Hub ids)."""
    root = base_parts[0]
    folder, card, *_ = hub_folder
    assert "base_model" not in card_metadata(str(card))
    assert f"`{root / 'siglip-tiny'}` (a local checkpoint), `{root / 'qwen2-tiny'}` (a local checkpoint)" in card.text
    assert "# slowfast-tiny" in card.text


def test_model_card_rejects_bad_arguments(base_parts):
    root, tokenizer, _ = base_parts
    model = build_model(str(root / "siglip-tiny"), str(root / "qwen2-tiny"), tokenizer)
    processor = build_processor(model, tokenizer)
    with pytest.raises(ValueError, match="`base_models` must hold Hub ids"):
        create_model_card(model, processor, model_id="m", license="mit", base_models=["/local/models/qwen2"])
    with pytest.raises(ValueError, match="`base_models` must be a list of Hub ids"):
        create_model_card(model, processor, model_id="m", license="mit", base_models="Qwen/Qwen2-7B")
    with pytest.raises(ValueError, match="`datasets` must hold Hub ids"):
        create_model_card(model, processor, model_id="m", license="mit", datasets=["two/slashes/here"])
    with pytest.raises(ValueError, match="`license` must be a Hub license id"):
        create_model_card(model, processor, model_id="m", license="")
    with pytest.raises(ValueError, match="`model` must be a slow-fast model"):
        create_model_card(Qwen2ForCausalLM(tiny_text_config()), processor, model_id="m", license="mit")
    with pytest.raises(ValueError, match="`processor` must be a SlowFastProcessor"):
        create_model_card(model, tokenizer, model_id="m", license="mit")
    other_processor = SlowFastProcessor(
        processor.video_processor, tokenizer, patch_size=PATCH_SIZE, fast_temporal_stride=2
    )
    with pytest.raises(ValueError, match=r"does not match `model` \(fast_temporal_stride: model 4, processor 2\)"):
        create_model_card(model, other_processor, model_id="m", license="mit")


def test_save_for_hub_writes_a_self_sufficient_folder(hub_folder):
    folder, card, *_ = hub_folder
    files = set(os.listdir(folder))
    shards = sorted(name for name in files if name.startswith("model-") and name.endswith(".safetensors"))
    assert len(shards) > 1 and "model.safetensors" not in files, sorted(files)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    missing = {"config.json", "generation_config.json", "README.md", *CODE_FILES, *PROCESSOR_FILES} - files
    assert not missing, f"missing {sorted(missing)} in {sorted(files)}"

    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_slowfast.SlowFastConfig",
        "AutoModel": "modeling_slowfast.SlowFastModel",
        "AutoModelForImageTextToText": "modeling_slowfast.SlowFastForConditionalGeneration",
    }
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_slowfast.SlowFastProcessor"}
    assert processor_config["video_processor"]["num_frames"] == NUM_FRAMES
    assert "<|im_start|>" in (folder / "chat_template.jinja").read_text()

    readme = (folder / "README.md").read_text()
    assert readme == str(card)
    assert ModelCard.load(folder / "README.md").data.library_name == "transformers"


def test_hub_folder_loads_with_the_auto_classes(hub_folder):
    folder, _, model, processor, expected = hub_folder
    loaded_model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    loaded_processor = AutoProcessor.from_pretrained(folder)
    assert type(loaded_model) is SlowFastForConditionalGeneration
    assert type(loaded_processor) is SlowFastProcessor
    video = folder.parent / "clip.mp4"
    got = answer(loaded_model, loaded_processor, video)
    assert torch.equal(got["input_ids"], expected["input_ids"])
    # the same weights; loading from shards may align them differently in memory, hence last-bit differences
    torch.testing.assert_close(got["logits"], expected["logits"], atol=1e-5, rtol=0)
    assert torch.equal(got["tokens"], expected["tokens"])


# Runs in a fresh interpreter where `slowfast_hf` cannot be imported: everything comes from the folder (or Hub repo).
REMOTE_CODE_SCRIPT = BLOCK_SLOWFAST_HF + textwrap.dedent(
    """

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_id, video, out_file = sys.argv[1:4]
    model = AutoModelForImageTextToText.from_pretrained(model_id, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
    assert "slowfast_hf" not in sys.modules, "loading imported the installed package"
    messages = [{"role": "user", "content": [{"type": "video", "path": video},
                                             {"type": "text", "text": "what happens in the video?"}]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    classes = {name: f"{type(obj).__module__}.{type(obj).__name__}"
               for name, obj in (("model", model), ("processor", processor),
                                 ("video_processor", processor.video_processor))}
    torch.save({"logits": logits, "tokens": tokens, "input_ids": inputs["input_ids"], "classes": classes}, out_file)
    """
)


def run_python(script: str, args: list, work, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    path = work / "script.py"
    path.write_text(script)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(work / "modules_cache"), PYTHONPATH="")
    env.update(extra_env or {})
    result = subprocess.run(
        [sys.executable, str(path), *map(str, args)], cwd=work, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def assert_remote_code_answers(out: dict, expected: dict):
    for name, qualified_name in out["classes"].items():
        assert qualified_name.startswith("transformers_modules."), (name, qualified_name)
    assert torch.equal(out["input_ids"], expected["input_ids"])
    torch.testing.assert_close(out["logits"], expected["logits"], atol=1e-5, rtol=0)
    assert torch.equal(out["tokens"], expected["tokens"])


def test_hub_folder_loads_without_the_package(hub_folder, tmp_path):
    """`trust_remote_code=True`: the model and the processor (video processor and video reading included) come from
    the code files in the folder."""
    folder, _, model, processor, expected = hub_folder
    run_python(REMOTE_CODE_SCRIPT, [folder, folder.parent / "clip.mp4", tmp_path / "out.pt"], tmp_path)
    assert_remote_code_answers(torch.load(tmp_path / "out.pt"), expected)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeHub(ThreadingHTTPServer):
    """
    The few Hub endpoints that `create_repo`, `ModelCard.push_to_hub`, Transformers' `push_to_hub` (preupload,
    LFS batch + basic upload, NDJSON commit) and `from_pretrained` (HEAD/GET `resolve`, and the revision info and
    file tree that sharded checkpoints are downloaded with) use, served from memory on 127.0.0.1. `*.safetensors`
    files go through LFS like on the Hub; Xet transfers are not implemented (the clients run with
    `HF_HUB_DISABLE_XET=1`), and every revision resolves to the latest commit.
    """

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeHubHandler)
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, list[dict]] = {}
        self.lfs_objects: dict[str, bytes] = {}


class FakeHubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args):  # keep the test output clean
        pass

    def reply(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def not_found(self, error_code: str):
        self.reply(404, {"error": error_code}, {"X-Error-Code": error_code})

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_POST(self):
        path = urlparse(self.path).path
        body = self.read_body()
        hub = self.server
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = (
                f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            )
            hub.repos.setdefault(repo_id, {})
            hub.commits.setdefault(repo_id, [])
            return self.reply(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            return self.reply(200, {"errors": [], "warnings": []})
        if path.endswith(".git/info/lfs/objects/batch"):
            objects = json.loads(body)["objects"]
            actions = [
                {**obj, "actions": {"upload": {"href": f"{hub.endpoint}/lfs-upload/{obj['oid']}"}}} for obj in objects
            ]
            return self.reply(200, {"transfer": "basic", "objects": actions})
        parts = path.split("/")  # /api/models/{namespace}/{name}/{preupload|commit}/{revision}
        if len(parts) == 7 and parts[:3] == ["", "api", "models"]:
            repo_id = f"{parts[3]}/{parts[4]}"
            if repo_id not in hub.repos:
                return self.not_found("RepoNotFound")
            if parts[5] == "preupload":
                files = [
                    {
                        "path": file["path"],
                        "uploadMode": "lfs" if file["path"].endswith(".safetensors") else "regular",
                        "shouldIgnore": False,
                    }
                    for file in json.loads(body)["files"]
                ]
                return self.reply(200, {"files": files})
            if parts[5] == "commit":
                return self.commit(repo_id, body)
        self.reply(400, {"error": f"fake Hub: unexpected POST {path}"})

    def commit(self, repo_id: str, body: bytes):
        hub = self.server
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header, changes = lines[0]["value"], {}
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                changes[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                data = hub.lfs_objects[value["oid"]]
                assert sha256(data) == value["oid"] and len(data) == value["size"]
                changes[value["path"]] = data
            else:
                return self.reply(400, {"error": f"fake Hub: unexpected commit operation {line['key']}"})
        hub.repos[repo_id].update(changes)
        oid = hashlib.sha1(body).hexdigest()
        hub.commits[repo_id].append({"oid": oid, "message": header["summary"], "files": sorted(changes)})
        self.reply(200, {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid})

    def do_PUT(self):
        path = urlparse(self.path).path
        if path.startswith("/lfs-upload/"):
            self.server.lfs_objects[path.removeprefix("/lfs-upload/")] = self.read_body()
            return self.reply(200)
        self.reply(400, {"error": f"fake Hub: unexpected PUT {path}"})

    def do_GET(self):
        parts = unquote(urlparse(self.path).path).split("/")
        hub = self.server
        if parts[1:3] == ["api", "models"] and len(parts) >= 7:  # /api/models/{namespace}/{name}/{kind}/{revision}
            repo_id, kind, subpath = f"{parts[3]}/{parts[4]}", parts[5], "/".join(parts[7:])
            if repo_id not in hub.repos:
                return self.not_found("RepoNotFound")
            files = hub.repos[repo_id]
            if kind == "revision":
                siblings = [{"rfilename": name} for name in sorted(files)]
                return self.reply(200, {"id": repo_id, "sha": hub.commits[repo_id][-1]["oid"], "siblings": siblings})
            if kind == "tree" and not subpath:
                return self.reply(200, [self.tree_entry(name, data) for name, data in sorted(files.items())])
        elif len(parts) >= 6 and parts[3] == "resolve":  # /{namespace}/{name}/resolve/{revision}/{file path}
            repo_id, filename = f"{parts[1]}/{parts[2]}", "/".join(parts[5:])
            if repo_id not in hub.repos:
                return self.not_found("RepoNotFound")
            if filename in hub.repos[repo_id]:
                data = hub.repos[repo_id][filename]
                headers = {"X-Repo-Commit": hub.commits[repo_id][-1]["oid"], "ETag": f'"{sha256(data)}"'}
                return self.reply(200, data, headers)
        self.not_found("EntryNotFound")  # a missing file, or a folder listing such as `additional_chat_templates`

    @staticmethod
    def tree_entry(name: str, data: bytes) -> dict:
        entry = {"type": "file", "path": name, "size": len(data), "oid": sha256(data)}
        if name.endswith(".safetensors"):
            entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
        return entry

    do_HEAD = do_GET


@pytest.fixture
def fake_hub():
    hub = FakeHub()
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    yield hub
    hub.shutdown()
    hub.server_close()
    thread.join()


PUSH_SCRIPT = textwrap.dedent(
    """
    import sys

    import torch
    from transformers import AutoTokenizer, Qwen2ForCausalLM, SiglipVisionModel

    sys.path.insert(0, sys.argv[1])  # this test module, for its helpers
    from test_hub import SHARD_SIZE, TRAINING_DATA, answer, build_model, build_processor

    from slowfast_hf.hub import push_to_hub

    base_dir, video, out_file = sys.argv[2:5]
    token = "hf_fake_token_for_a_local_fake_hub"
    # the base parts go to the (fake) Hub first, so that the slow-fast model is built from Hub ids
    SiglipVisionModel.from_pretrained(f"{base_dir}/siglip-tiny").push_to_hub("tiny-org/siglip-tiny", token=token)
    Qwen2ForCausalLM.from_pretrained(f"{base_dir}/qwen2-tiny").push_to_hub("tiny-org/qwen2-tiny", token=token)
    tokenizer = AutoTokenizer.from_pretrained(f"{base_dir}/qwen2-tiny")
    model = build_model("tiny-org/siglip-tiny", "tiny-org/qwen2-tiny", tokenizer)
    processor = build_processor(model, tokenizer)
    commit = push_to_hub(
        model, processor, "tiny-org/slowfast-tiny", license="apache-2.0", training_data=TRAINING_DATA, token=token,
        max_shard_size=SHARD_SIZE,
    )
    torch.save({**answer(model, processor, video), "commit": str(commit)}, out_file)
    """
)


def test_push_to_hub_end_to_end_on_a_loopback_hub(fake_hub, base_parts, tmp_path):
    root, _, video = base_parts
    hub_env = dict(
        HF_ENDPOINT=fake_hub.endpoint,
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(tmp_path / "hf_home"),  # an empty cache and no stored token
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    modeling_tests = os.path.dirname(os.path.abspath(__file__))
    run_python(PUSH_SCRIPT, [modeling_tests, root, video, tmp_path / "pushed.pt"], tmp_path, hub_env)
    pushed = torch.load(tmp_path / "pushed.pt")

    repo = fake_hub.repos["tiny-org/slowfast-tiny"]
    messages = [commit["message"] for commit in fake_hub.commits["tiny-org/slowfast-tiny"]]
    assert messages == ["Add model card", "Upload SlowFastForConditionalGeneration", "Upload processor"]
    assert pushed["commit"].startswith(f"{fake_hub.endpoint}/tiny-org/slowfast-tiny/commit/")
    missing = {"config.json", "model.safetensors.index.json", "README.md", *CODE_FILES, *PROCESSOR_FILES} - set(repo)
    assert not missing, f"missing {sorted(missing)} in {sorted(repo)}"
    shards = [data for name, data in repo.items() if name.endswith(".safetensors")]
    assert len(shards) > 1 and all(sha256(data) in fake_hub.lfs_objects for data in shards)  # sent through LFS
    # Transformers' push_to_hub kept the pushed card
    metadata = card_metadata(repo["README.md"].decode())
    assert metadata["base_model"] == ["tiny-org/siglip-tiny", "tiny-org/qwen2-tiny"]
    assert metadata["license"] == "apache-2.0" and metadata["library_name"] == "transformers"
    assert TRAINING_DATA in repo["README.md"].decode()

    # a fresh process without the package downloads the repository and answers the same
    download = tmp_path / "download"
    download.mkdir()
    run_python(REMOTE_CODE_SCRIPT, ["tiny-org/slowfast-tiny", video, download / "out.pt"], download, hub_env)
    assert_remote_code_answers(torch.load(download / "out.pt"), pushed)
