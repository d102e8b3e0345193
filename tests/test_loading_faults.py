"""Issue 12, loading faults: unsafe and truncated weights files (7, 8), the command-line flags of
run_llava and serve/cli (9), the default device (11), and uncached or missing models (13)."""
import ast
import builtins
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from PIL import Image
from safetensors.torch import save_file

from llava import cli_support
from llava.errors import CheckpointError
from llava.eval import run_llava
from llava.model import builder
from llava.model.builder import DeviceError, describe_device, load_pretrained_model, resolve_device
from llava.serve import cli
from tests.checkpoint_copies import WritesAFile, copy_checkpoint

REPO = Path(__file__).resolve().parents[1]
TOWER_WEIGHTS = Path("clip-vision-tower") / "pytorch_model.bin"
UNSAFE = ("not loaded: a weights file holds only tensors, but this pickle would call io.open when unpickled; use a "
          "checkpoint from a source you trust (safetensors if it has them)")
TRUNCATED = ("cannot read the weights, the file is truncated or corrupt (PytorchStreamReader failed reading zip "
             "archive: failed finding central directory); download or copy it again")
TRUNCATED_SAFETENSORS = ("cannot read the weights, the file is truncated or corrupt (Error while deserializing "
                         "header: incomplete metadata, file not fully covered); download or copy it again")


def _plant_pickle(path: Path, marker: Path) -> None:
    """Replaces a weights file by one whose pickle creates `marker` when loaded without weights_only."""
    weights = torch.load(path, map_location="cpu", weights_only=True)
    weights["payload"] = WritesAFile(marker)
    torch.save(weights, path)


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _bin_to_safetensors(checkpoint: Path) -> Path:
    """Rewrites a checkpoint's language-model weights as model.safetensors (no .bin left)."""
    weights = torch.load(checkpoint / "pytorch_model.bin", map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, checkpoint / "model.safetensors", {"format": "pt"})
    (checkpoint / "pytorch_model.bin").unlink()
    return checkpoint / "model.safetensors"


@pytest.fixture()
def image(tmp_path) -> Path:
    path = tmp_path / "red.png"
    Image.new("RGB", (30, 20), (200, 30, 30)).save(path)
    return path


@pytest.fixture()
def old_torch_default(monkeypatch):
    """torch < 2.6's default: a torch.load that does not say weights_only unpickles anything."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def _error_line(capsys, exit_info, program: str = "run_llava") -> str:
    """The message of the only stderr line, which must be ``<program>: error: ...``, after exit 2."""
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{program}: error: "), err
    return err[len(f"{program}: error: "):].rstrip("\n")


# ------------------------------------------------------------------ fault 7: a pickle in a .bin never runs


@pytest.mark.parametrize("part", ["language model", "vision tower"])
def test_a_weights_pickle_that_writes_a_file_is_refused_not_run(tiny_checkpoint, tmp_path, old_torch_default, part):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    weights = checkpoint / ("pytorch_model.bin" if part == "language model" else TOWER_WEIGHTS)
    marker = tmp_path / "pwned"
    _plant_pickle(weights, marker)
    with pytest.raises(CheckpointError) as error:
        load_pretrained_model(str(checkpoint), None, "llava-v1.5-tiny", device="cpu")
    assert not marker.exists(), "the checkpoint's pickle ran"
    assert str(error.value) == f"{weights}: {UNSAFE}"


def _projector_checkpoint(tiny_checkpoint: Path, folder: Path) -> Path:
    projector_dir = folder / "llava-v1.5-tiny-pretrain"
    projector_dir.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", projector_dir / "config.json")
    return projector_dir


def _random_projector(tiny_checkpoint: Path) -> dict:
    base = torch.load(tiny_checkpoint / "pytorch_model.bin", map_location="cpu", weights_only=True)
    return {k: torch.randn_like(v) for k, v in base.items() if "mm_projector" in k}


def test_a_projector_pickle_that_writes_a_file_is_refused_not_run(tiny_checkpoint, tmp_path, old_torch_default):
    projector_dir = _projector_checkpoint(tiny_checkpoint, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({**_random_projector(tiny_checkpoint), "payload": WritesAFile(marker)}, projector_dir / "mm_projector.bin")
    with pytest.raises(CheckpointError) as error:
        load_pretrained_model(str(projector_dir), str(tiny_checkpoint), "llava-v1.5-tiny-pretrain", device="cpu")
    assert not marker.exists(), "the projector's pickle ran"
    assert str(error.value) == f"{projector_dir / 'mm_projector.bin'}: {UNSAFE}"


def test_a_projector_in_safetensors_is_preferred_to_its_bin(tiny_checkpoint, tmp_path, old_torch_default):
    projector_dir = _projector_checkpoint(tiny_checkpoint, tmp_path)
    projector = _random_projector(tiny_checkpoint)
    save_file(projector, projector_dir / "mm_projector.safetensors")
    marker = tmp_path / "pwned"
    torch.save({"payload": WritesAFile(marker)}, projector_dir / "mm_projector.bin")
    _, model, _, _ = load_pretrained_model(str(projector_dir), str(tiny_checkpoint), "llava-v1.5-tiny-pretrain",
                                           device="cpu")
    assert not marker.exists(), "the .bin beside the safetensors was unpickled"
    state = model.state_dict()
    assert len(projector) == 4 and all(torch.equal(state[k], v) for k, v in projector.items())


def test_setup_requires_a_torch_whose_load_defaults_to_weights_only():
    tree = ast.parse((REPO / "setup.py").read_text())
    (requires,) = [kw.value for node in ast.walk(tree) if isinstance(node, ast.Call) for kw in node.keywords
                   if kw.arg == "install_requires"]
    (torch_requirement,) = [Requirement(e.value) for e in requires.elts if Requirement(e.value).name == "torch"]
    assert not torch_requirement.specifier.contains("2.5.1")
    assert torch_requirement.specifier.contains("2.6.0")


# ------------------------------------------------------------------ fault 8: a truncated file is one line


@pytest.mark.parametrize("part", ["language model", "language model safetensors", "vision tower"])
def test_a_truncated_weights_file_is_one_line_naming_it(tiny_checkpoint, tmp_path, image, capsys, part):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    if part == "language model":
        weights, reason = checkpoint / "pytorch_model.bin", TRUNCATED
    elif part == "language model safetensors":
        weights, reason = _bin_to_safetensors(checkpoint), TRUNCATED_SAFETENSORS
    else:
        weights, reason = checkpoint / TOWER_WEIGHTS, TRUNCATED
    _truncate(weights)
    with pytest.raises(SystemExit) as exit_info:
        run_llava.main(["--model-path", str(checkpoint), "--image-file", str(image), "--query", "Q?", "--device", "cpu"])
    # the device line, then the error: the error is the last line and the only one after loading began
    err = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2
    assert err == ["device: cpu (as asked)", f"run_llava: error: {weights}: {reason}"]


def test_a_language_model_in_safetensors_loads(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    expected = torch.load(checkpoint / "pytorch_model.bin", map_location="cpu", weights_only=True)
    _bin_to_safetensors(checkpoint)
    _, model, _, _ = load_pretrained_model(str(checkpoint), None, "llava-v1.5-tiny", device="cpu")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())


# ------------------------------------------------------------------ fault 9: bad flags are one line, exit 2

BAD_FLAGS = [
    (["--device", "tpu"], "--device: device 'tpu' is not supported: use cpu, cuda or cuda:N (or auto)"),
    (["--device", "cuda:x"], "--device: device 'cuda:x' is not supported: use cpu, cuda or cuda:N (or auto)"),
    (["--top_p", "7"], "--top_p must be in (0, 1], got 7.0"),
    (["--top-p", "0"], "--top_p must be in (0, 1], got 0.0"),
    (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
    (["--temperature", "nan"], "--temperature must be >= 0, got nan"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    (["--temperature", "warm"], "argument --temperature: invalid float value: 'warm'"),
    (["--max-new-tokens", "2.5"], "argument --max-new-tokens/--max_new_tokens: invalid int value: '2.5'"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
@pytest.mark.parametrize("command", [run_llava, cli], ids=["run_llava", "cli"])
def test_a_bad_flag_is_one_line_naming_it_exit_2(command, flags, message, tmp_path, image, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cli_support, "load_pretrained_model", lambda *a, **k: pytest.fail("the model was loaded"))
    argv = ["--model-path", str(tmp_path / "model"), "--image-file", str(image), *flags]
    with pytest.raises(SystemExit) as exit_info:
        command.main(argv + (["--query", "Q?"] if command is run_llava else []))
    assert _error_line(capsys, exit_info, command.build_parser().error_name) == message


def test_a_missing_required_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--image-file", "x.png"])
    assert _error_line(capsys, exit_info, "cli") == "the following arguments are required: --model-path"


# ------------------------------------------------------------------ fault 11: CUDA when available, else CPU


def test_the_default_device_is_cuda_when_available_else_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == resolve_device("auto") == "cuda"
    assert describe_device("auto", "cuda") == "device: cuda (CUDA available)"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"^device 'cuda:1' was asked for but this machine has 1 GPU\(s\)$"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == resolve_device("auto") == "cpu"
    assert describe_device(None, "cpu") == "device: cpu (no CUDA available)"
    assert describe_device("cpu", "cpu") == "device: cpu (as asked)"
    with pytest.raises(DeviceError, match=r"^device 'cuda' was asked for but CUDA is not available: use cpu"):
        resolve_device("cuda")


def test_load_pretrained_model_without_a_device_runs_on_the_cpu_without_cuda(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, model, _, _ = load_pretrained_model(str(tiny_checkpoint), None, "llava-v1.5-tiny")
    assert model.device.type == "cpu" and model.dtype == torch.float32
    assert model.get_vision_tower().device.type == "cpu"


def test_run_llava_without_device_says_cpu_first_and_answers(tiny_checkpoint, image, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    answer = run_llava.main(["--model-path", str(tiny_checkpoint), "--image-file", str(image), "--query", "Q?",
                             "--temperature", "0", "--max-new-tokens", "3"])
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0] == "device: cpu (no CUDA available)"
    assert captured.out == answer + "\n"


def test_serve_cli_without_device_says_cpu_first(tiny_checkpoint, image, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(builtins, "input", lambda prompt="": "")
    conv = cli.main(["--model-path", str(tiny_checkpoint), "--image-file", str(image)])
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0] == "device: cpu (no CUDA available)"
    assert conv.messages == [] and captured.out.strip() == "exit..."


# ------------------------------------------------------------------ fault 13: uncached or missing models


def _run_llava_subprocess(argv, tmp_path, **env):
    """run_llava in a fresh process with an empty Hugging Face cache and the hub at a port that refuses."""
    environment = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    environment.update(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT="http://127.0.0.1:9",
                       NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-m", "llava.eval.run_llava", *argv], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=environment)


def test_an_uncached_hub_model_with_the_hub_unreachable_is_one_line(tmp_path, image):
    result = _run_llava_subprocess(["--model-path", "liuhaotian/llava-v1.5-7b", "--image-file", str(image),
                                    "--query", "Q?", "--device", "cpu"], tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "run_llava: error: model path liuhaotian/llava-v1.5-7b is not a local directory and not in the Hugging Face "
        "cache; http://127.0.0.1:9 cannot be reached (ConnectionError): pass a local checkpoint directory, or fetch "
        "it once with downloads on\n")


def test_an_uncached_hub_vision_tower_with_the_hub_unreachable_is_one_line(tiny_checkpoint, tmp_path, image):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    config = (checkpoint / "config.json").read_text()
    (checkpoint / "config.json").write_text(config.replace(f'"{checkpoint / "clip-vision-tower"}"',
                                                           '"openai/clip-vit-large-patch14-336"'))
    result = _run_llava_subprocess(["--model-path", str(checkpoint), "--image-file", str(image), "--query", "Q?",
                                    "--device", "cpu"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "device: cpu (as asked)",
        f"run_llava: error: {checkpoint}/config.json: field 'mm_vision_tower': vision tower "
        "'openai/clip-vit-large-patch14-336' is not available offline: it is not a local directory and not in the "
        "Hugging Face cache, and http://127.0.0.1:9 cannot be reached (ConnectionError); point mm_vision_tower at a "
        "local directory, or fetch the tower once with downloads on"]


@pytest.mark.parametrize("path", ["/nonexistent/llava-v1.5-7b", "./checkpoints/llava-v1.5-7b"])
def test_a_missing_model_path_is_one_line_before_loading(path, image, capsys, monkeypatch):
    monkeypatch.setattr(cli_support, "load_pretrained_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as exit_info:
        run_llava.main(["--model-path", path, "--image-file", str(image), "--query", "Q?", "--device", "cpu"])
    assert _error_line(capsys, exit_info) == f"model path {path} does not exist"


def test_the_hub_is_probed_once_a_process(monkeypatch):
    import requests

    from llava.model.multimodal_encoder import clip_encoder

    calls = []
    monkeypatch.setattr(requests, "head", lambda url, timeout: calls.append(url))
    clip_encoder._hub_unreachable_reason.cache_clear()
    try:
        assert clip_encoder._hub_unreachable_reason("http://hub.test") is None
        assert clip_encoder._hub_unreachable_reason("http://hub.test") is None
    finally:
        clip_encoder._hub_unreachable_reason.cache_clear()
    assert calls == ["http://hub.test"]
    assert builder.hub_unavailable_reason() == "downloads are off (HF_HUB_OFFLINE=1)"
