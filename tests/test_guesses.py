"""Guesses that used to go wrong silently (issue 27, fault 8): a vision tower named relative to a
checkpoint whose folder lacks "llava", the conversation template of a checkpoint whose name does not
say it, and a benchmark script given a local model path that does not exist."""
import json
import shutil

import pytest
from PIL import Image

from llava.cli_support import select_conv_mode
from llava.errors import CheckpointError
from llava.eval import run_llava
from llava.model.convert import main as convert_main
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.template_choice import CONV_MODE_FIELD, auto_conv_mode
from tests.scripts import SCRIPTS, run_script

TOWER_DIR = "clip-vision-tower"


def _edit_config(checkpoint, **fields):
    config = checkpoint / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **fields}, indent=2))


@pytest.fixture()
def relative_tower_checkpoint(tiny_checkpoint, tmp_path, monkeypatch):
    """The tiny checkpoint in a folder without "llava" in its name, its tower named relative to it;
    the working directory is elsewhere, so the name resolves only against the checkpoint."""
    path = shutil.copytree(tiny_checkpoint, tmp_path / "my-model")
    _edit_config(path, mm_vision_tower=TOWER_DIR)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return path


@pytest.fixture()
def image_file(tmp_path):
    path = tmp_path / "picture.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    return path


def _answer(model_path, image_file, *extra):
    return run_llava.main(["--model-path", str(model_path), "--image-file", str(image_file), "--query", "What?",
                           "--device", "cpu", "--temperature", "0", "--max-new-tokens", "2", *extra])


def test_a_relative_tower_is_found_inside_the_checkpoint_folder(relative_tower_checkpoint, tiny_checkpoint):
    model = LlavaLlamaForCausalLM.from_pretrained(str(relative_tower_checkpoint))
    tower = model.get_vision_tower()
    assert tower.vision_tower_name == str(relative_tower_checkpoint / TOWER_DIR)
    reference = LlavaLlamaForCausalLM.from_pretrained(str(tiny_checkpoint)).get_vision_tower()
    assert tower.config.to_dict() == reference.config.to_dict()


def test_a_checkpoint_folder_without_llava_in_its_name_answers(relative_tower_checkpoint, tiny_checkpoint, image_file,
                                                              capsys):
    """Loaded as LLaVA by its config.json (model_type "llava"), the copy answers as the original."""
    answers = [_answer(path, image_file, "--conv-mode", "vicuna_v1") for path in (relative_tower_checkpoint,
                                                                                 tiny_checkpoint)]
    assert answers[0] == answers[1]
    assert "error" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- the conversation template

def test_the_converter_records_the_template_and_says_why(tiny_checkpoint, tmp_path, capsys):
    hf = tmp_path / "llava-hf-ok"
    assert convert_main(["--to", "hf", str(tiny_checkpoint), str(hf)]) == 0
    assert json.loads((hf / "config.json").read_text())[CONV_MODE_FIELD] == "llava_v1"
    assert capsys.readouterr().err == (
        f"conversation template: llava_v1 (guessed from the model name 'llava-v1.5-tiny'): recorded in "
        f"{hf / 'config.json'} field 'conv_mode'\n")
    back = tmp_path / "plain-name"
    assert convert_main(["--to", "original", str(hf), str(back), "--conv-mode", "vicuna_v1"]) == 0
    assert json.loads((back / "config.json").read_text())[CONV_MODE_FIELD] == "vicuna_v1"
    assert "[WARNING] it differs from llava_v1, recorded in the checkpoint's config.json" in capsys.readouterr().err


def test_a_recorded_template_beats_the_name_guess(tiny_checkpoint, tmp_path, image_file, capsys):
    """llava-hf-ok guesses llava_v0 by name; the checkpoint records llava_v1, which is used and named."""
    hf = tmp_path / "llava-hf-ok"
    assert convert_main(["--to", "hf", str(tiny_checkpoint), str(hf)]) == 0
    capsys.readouterr()
    assert auto_conv_mode(hf.name) == "llava_v0"
    _answer(hf, image_file)
    lines = capsys.readouterr().err.splitlines()
    assert "conversation template: llava_v1 (recorded in the checkpoint's config.json field 'conv_mode')" in lines


def test_the_name_guess_and_an_override_are_said(tiny_checkpoint, tmp_path, capsys):
    plain = shutil.copytree(tiny_checkpoint, tmp_path / "llava-hf-ok")
    assert select_conv_mode(plain.name, None, str(plain)) == "llava_v0"
    assert capsys.readouterr().err == "conversation template: llava_v0 (guessed from the model name 'llava-hf-ok')\n"
    _edit_config(plain, conv_mode="llava_v1")
    assert select_conv_mode(plain.name, "vicuna_v1", str(plain)) == "vicuna_v1"
    assert capsys.readouterr().err == (
        "conversation template: vicuna_v1 (--conv-mode; [WARNING] it differs from llava_v1, recorded in the "
        "checkpoint's config.json field 'conv_mode')\n")


@pytest.mark.parametrize("value", ["no-such-template", 7])
def test_a_recorded_template_that_does_not_exist_is_one_line(tiny_checkpoint, tmp_path, value):
    path = shutil.copytree(tiny_checkpoint, tmp_path / "llava-odd")
    _edit_config(path, conv_mode=value)
    with pytest.raises(CheckpointError) as error:
        select_conv_mode(path.name, None, str(path))
    assert str(error.value).startswith(f"{path / 'config.json'}: field 'conv_mode' is {value!r}; expected one of [")


# ----------------------------------------------------------------------------- the benchmark scripts

def _textvqa_data(root):
    """The files textvqa.sh checks for, empty: the script gets as far as starting the model."""
    data = root / "textvqa"
    (data / "train_images").mkdir(parents=True)
    (data / "llava_textvqa_val_v051_ocr.jsonl").write_text("")
    (data / "TextVQA_0.5.1_val.json").write_text("{}")


@pytest.mark.parametrize("model", ["/nonexistent/llava", "./no/such/llava"])
def test_a_missing_local_model_path_is_named_before_anything_else(model, tmp_path):
    _textvqa_data(tmp_path)
    result = run_script([str(SCRIPTS / "textvqa.sh")], {"EVAL_DIR": str(tmp_path), "MODEL_PATH": model},
                        timeout=60, unset=("DEVICE",))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"textvqa.sh: error: MODEL_PATH {model} does not exist\n"
