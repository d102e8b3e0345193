"""Issue 27, fault 7: bad config.json values and JSON nested too deeply are one line naming the
file and the field (exit status 2 on the command line), found before any model is built."""
import json
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from fitprune.recipe import main as recipe_main
from llava.errors import CheckpointError
from llava.eval import run_llava
from llava.eval.io_utils import JsonlError, read_jsonl
from llava.eval.driver.questions import QuestionFileError, load_questions
from llava.model import config_checks
from llava.model.builder import load_pretrained_model
from llava.model.hf_weights import SAFETENSORS_INDEX, read_hf_weight_files
from llava.model.pruning.recipe import RecipeBook, RecipeError
from tests.checkpoint_copies import copy_checkpoint

DEPTH = 100_000
GIB = 1024 ** 3
AVAILABLE = 16 * GIB
"""The free memory the memory check is told the machine has, so that its message is exact."""
MISSING = object()
READ_AVAILABLE_RAM = config_checks.available_ram_bytes


def _nested_too_deeply() -> str:
    return "[" * DEPTH + "]" * DEPTH


def _too_deep_message(path) -> str:
    return f"{path}: JSON nested too deeply to read (past about {sys.getrecursionlimit()} levels of arrays and objects)"


def _set_field(config: Path, name: str, value) -> None:
    """Sets a (dotted: ``text_config.x``) field of a config.json; `MISSING` removes it."""
    fields = json.loads(config.read_text())
    *parents, last = name.split(".")
    holder = fields
    for parent in parents:
        holder = holder[parent]
    if value is MISSING:
        del holder[last]
    else:
        holder[last] = value
    config.write_text(json.dumps(fields))


@pytest.fixture(autouse=True)
def _known_free_memory(monkeypatch):
    monkeypatch.setattr(config_checks, "available_ram_bytes", lambda: AVAILABLE)


# The tiny model: hidden 64, 4 heads (2 key-value), intermediate 128, 4 layers, vision width 32.
BAD_FIELDS = [
    ("num_hidden_layers", "4", "field 'num_hidden_layers' must be a positive int, got str '4'"),
    ("hidden_size", -64, "field 'hidden_size' must be a positive int, got int -64"),
    ("vocab_size", 1e9, "field 'vocab_size' must be a positive int, got float 1000000000.0"),
    ("num_attention_heads", 3, "field 'num_attention_heads' (3) does not divide hidden_size (64)"),
    ("rms_norm_eps", "tiny", "field 'rms_norm_eps' must be a positive number, got str 'tiny'"),
    ("mm_hidden_size", 0, "field 'mm_hidden_size' must be a positive int, got int 0"),
    ("mm_vision_select_layer", MISSING,
     "field 'mm_vision_select_layer' is missing (the vision layer whose features LLaVA takes, -2 for LLaVA-1.5)"),
    ("mm_vision_select_layer", "-2", "field 'mm_vision_select_layer' must be an int, got str '-2'"),
    ("mm_projector_type", "mlp2x_relu",
     "field 'mm_projector_type' is 'mlp2x_relu'; known: 'linear', 'mlp<N>x_gelu' (e.g. mlp2x_gelu), 'identity'"),
    ("mm_vision_select_feature", "cls", "field 'mm_vision_select_feature' is 'cls'; known: patch, cls_patch"),
    # 10**9 rows of 64 floats, twice (embedding and output): 128e9 parameters at 4 bytes
    ("vocab_size", 10 ** 9, "field 'vocab_size' is 1000000000: the model's weights would take about 476.8 GiB "
                            "(128.00 billion parameters at 4 bytes), more than the 16.0 GiB available on cpu"),
]
BAD_FIELD_IDS = ["layers-str", "hidden-negative", "vocab-float", "heads-indivisible", "eps-str", "mm-hidden-zero",
                 "select-layer-missing", "select-layer-str", "projector-unknown", "select-feature-unknown",
                 "vocab-1e9-memory"]


@pytest.mark.parametrize("name, value, message", BAD_FIELDS, ids=BAD_FIELD_IDS)
def test_a_bad_config_field_is_a_checkpoint_error_naming_it(tiny_checkpoint, tmp_path, name, value, message):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    _set_field(checkpoint / "config.json", name, value)
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(checkpoint), None, "llava-v1.5-tiny", device="cpu")
    assert str(err.value) == f"{checkpoint}/config.json: {message}"


@pytest.mark.parametrize("name, value, message", BAD_FIELDS, ids=BAD_FIELD_IDS)
def test_a_bad_config_field_is_one_line_exit_2_in_run_llava(tiny_checkpoint, tmp_path, capsys, name, value, message):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    _set_field(checkpoint / "config.json", name, value)
    image = tmp_path / "red.png"
    Image.new("RGB", (30, 20), (200, 30, 30)).save(image)
    with pytest.raises(SystemExit) as exit_info:
        run_llava.main(["--model-path", str(checkpoint), "--image-file", str(image), "--query", "Q?",
                        "--device", "cpu"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "device: cpu (as asked)", f"run_llava: error: {checkpoint}/config.json: {message}"]


def test_the_memory_estimate_counts_the_tiny_models_parameters(tiny):
    _, model, _ = tiny
    counted = sum(config_checks.parameter_counts(model.config.to_dict()).values())
    tower = sum(p.numel() for p in model.get_vision_tower().parameters())
    actual = sum(p.numel() for p in model.parameters()) - tower
    # the estimate leaves out biases of the projector only (2 x hidden_size = 128 parameters)
    assert actual - counted == 2 * model.config.hidden_size


def test_the_free_ram_is_read_from_the_machine():
    with open("/proc/meminfo", encoding="ascii") as handle:
        total = int(next(line for line in handle if line.startswith("MemTotal:")).split()[1]) * 1024
    assert 0 < READ_AVAILABLE_RAM() <= total


def test_on_cuda_the_free_memory_of_every_gpu_counts_with_the_free_ram(monkeypatch):
    free = {0: 3 * GIB, 1: 5 * GIB}
    monkeypatch.setattr(config_checks.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(config_checks.torch.cuda, "device_count", lambda: len(free))
    monkeypatch.setattr(config_checks.torch.cuda, "mem_get_info", lambda index: (free[index], 80 * GIB))
    assert config_checks.available_memory_bytes("cuda:1") == AVAILABLE + 8 * GIB
    assert config_checks.available_memory_bytes("cpu") == AVAILABLE


@pytest.mark.parametrize("name, value, message", [
    ("text_config.num_hidden_layers", "4", "field 'text_config.num_hidden_layers' must be a positive int, got str '4'"),
    ("text_config.hidden_size", -64, "field 'text_config.hidden_size' must be a positive int, got int -64"),
], ids=["layers-str", "hidden-negative"])
def test_a_bad_llava_hf_config_field_names_it(hf_checkpoint, tmp_path, name, value, message):
    checkpoint = Path(shutil.copytree(hf_checkpoint, tmp_path / "llava-1.5-tiny-hf"))
    _set_field(checkpoint / "config.json", name, value)
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(checkpoint), None, "llava-1.5-tiny-hf", device="cpu")
    assert str(err.value) == f"{checkpoint}/config.json: {message}"


# ------------------------------------------------------------------ JSON nested 100,000 deep


def test_a_deep_config_json_is_one_line(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    (checkpoint / "config.json").write_text(_nested_too_deeply())
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(checkpoint), None, "llava-v1.5-tiny", device="cpu")
    assert str(err.value) == _too_deep_message(checkpoint / "config.json")


def test_a_deep_recipe_file_is_one_line(tmp_path):
    path = tmp_path / "recipes.json"
    path.write_text('{"schema_version": ' + _nested_too_deeply() + "}")
    with pytest.raises(RecipeError) as err:
        RecipeBook.load(path)
    assert str(err.value) == _too_deep_message(path)


def test_recipe_show_of_a_deep_file_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "recipes.json"
    path.write_text(_nested_too_deeply())
    assert recipe_main(["show", str(path)]) == 2
    assert capsys.readouterr().err == f"python -m fitprune.recipe: error: {_too_deep_message(path)}\n"


@pytest.mark.parametrize("name, text, line", [
    ("questions.json", _nested_too_deeply(), None),
    ("questions.jsonl", '{"question_id": 1, "text": "Q?"}\n{"question_id": ' + _nested_too_deeply() + "}\n", 2),
], ids=["json-list", "jsonl"])
def test_a_deep_question_file_is_one_line(tmp_path, name, text, line):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(QuestionFileError) as err:
        load_questions(path)
    assert str(err.value) == _too_deep_message(path if line is None else f"{path}:{line}")


def test_a_deep_jsonl_line_is_one_line_naming_the_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 1}\n\n' + _nested_too_deeply() + "\n")
    with pytest.raises(JsonlError) as err:
        read_jsonl(path)
    assert str(err.value) == _too_deep_message(f"{path}:3")


def test_a_deep_safetensors_index_is_one_line(tmp_path):
    index = tmp_path / SAFETENSORS_INDEX
    index.write_text('{"weight_map": ' + _nested_too_deeply() + "}")
    with pytest.raises(CheckpointError) as err:
        read_hf_weight_files(str(tmp_path))
    assert str(err.value) == _too_deep_message(index)
