"""Issue 27, fault 1: no code from a checkpoint. Each way a checkpoint folder could get Python run
is tried on a copy of the tiny checkpoint (original layout, as a model base, and llava-hf layout):
a ``TransfoXLTokenizer`` whose ``vocab.pkl`` pickle creates a file when unpickled (CVE-2023-7018,
tried with a stand-in ``sacremoses`` installed, as transformers needs it to build that class), and
``auto_map`` in config.json or tokenizer_config.json naming a Python file that creates a file when
imported (transformers asks "Do you accept? [y/N]": tried with stdin closed and with ``y``).
Each must be refused in one line naming the file and field, with exit status 2, the marker file
never created."""
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from llava.errors import CheckpointError
from llava.model.builder import load_pretrained_model
from llava.model.tokenizer_loading import load_llama_tokenizer
from tests.checkpoint_copies import WritesAFile, copy_checkpoint

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 120
TOKENIZER_CLASS_REFUSED = ("field 'tokenizer_class' is 'TransfoXLTokenizer'; only the LLaMA SentencePiece tokenizer "
                           "is loaded (LlamaTokenizer, LlamaTokenizerFast), never a pickled vocabulary")
AUTO_MAP_REFUSED = ("field 'auto_map' names Python code in the checkpoint to run; this project runs no code from a "
                    "checkpoint: remove the field (LLaVA checkpoints do not need it)")


def _edit_json(path: Path, **fields) -> None:
    """Sets `fields` in a JSON file (a None value removes the field)."""
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not None}, indent=2))


def _plant_transfo_xl(checkpoint: Path, marker: Path) -> None:
    """Names TransfoXLTokenizer, whose vocabulary is a pickle, beside a vocab.pkl that creates `marker`."""
    _edit_json(checkpoint / "tokenizer_config.json", tokenizer_class="TransfoXLTokenizer")
    (checkpoint / "vocab.pkl").write_bytes(pickle.dumps(WritesAFile(marker)))


def _plant_auto_map(checkpoint: Path, filename: str, marker: Path) -> None:
    """`auto_map` in `filename` naming a module of the checkpoint that creates `marker` when imported.

    The field is set as transformers would ask about it: config.json with a model type it does not
    know, tokenizer_config.json without a tokenizer class of its own."""
    (checkpoint / "remote_code.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Remote:\n    pass\n")
    if filename == "config.json":
        _edit_json(checkpoint / filename, model_type="llava_remote", auto_map={"AutoConfig": "remote_code.Remote"})
    else:
        _edit_json(checkpoint / filename, tokenizer_class=None, auto_map={"AutoTokenizer": ["remote_code.Remote", None]})


def _stand_in_sacremoses(folder: Path) -> Path:
    """A folder holding a package named sacremoses with an installed version, enough for transformers
    to build a TransfoXLTokenizer (and so unpickle its vocabulary) when the folder is on PYTHONPATH."""
    package = folder / "sacremoses"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "class MosesPunctNormalizer:\n    def __init__(self, *args, **kwargs):\n        pass\n\n\n"
        "MosesTokenizer = MosesDetokenizer = MosesPunctNormalizer\n")
    info = folder / "sacremoses-0.0.53.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sacremoses\nVersion: 0.0.53\n")
    return folder


def _run(module: str, argv, tmp_path: Path, stdin: str = None, extra_path: Path = None):
    """`python -m module argv` offline, with its own module cache; stdin closed or holding `stdin`."""
    environment = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                       HF_MODULES_CACHE=str(tmp_path / "modules"),
                       PYTHONPATH=os.pathsep.join(str(p) for p in (REPO, extra_path) if p))
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, cwd=tmp_path, env=environment,
                          input=stdin, stdin=subprocess.DEVNULL if stdin is None else None)


def _run_llava(checkpoint: Path, tmp_path: Path, **kwargs):
    image = tmp_path / "red.png"
    Image.new("RGB", (30, 20), (200, 30, 30)).save(image)
    return _run("llava.eval.run_llava", ["--model-path", str(checkpoint), "--image-file", str(image), "--query", "Q?",
                                         "--device", "cpu"], tmp_path, **kwargs)


def test_a_transfo_xl_tokenizer_is_refused_and_its_pickle_never_run(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    marker = tmp_path / "pickle-ran"
    _plant_transfo_xl(checkpoint, marker)
    result = _run_llava(checkpoint, tmp_path, extra_path=_stand_in_sacremoses(tmp_path / "site"))
    assert not marker.exists()
    assert (result.returncode, result.stderr.splitlines()) == (2, [
        "device: cpu (as asked)", f"run_llava: error: {checkpoint}/tokenizer_config.json: {TOKENIZER_CLASS_REFUSED}"])


def test_the_converter_refuses_a_transfo_xl_tokenizer_without_running_its_pickle(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    marker = tmp_path / "pickle-ran"
    _plant_transfo_xl(checkpoint, marker)
    result = _run("llava.model.convert", ["--to", "hf", str(checkpoint), str(tmp_path / "out")], tmp_path,
                  extra_path=_stand_in_sacremoses(tmp_path / "site"))
    assert not marker.exists()
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"convert: error: {checkpoint}/tokenizer_config.json: {TOKENIZER_CLASS_REFUSED}")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("stdin", [None, "y\n"], ids=["stdin-closed", "answer-y"])
@pytest.mark.parametrize("filename", ["config.json", "tokenizer_config.json"])
def test_auto_map_is_refused_without_asking_or_importing(tiny_checkpoint, tmp_path, filename, stdin):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path, "llava-tiny")  # no dot: transformers can import its code
    marker = tmp_path / "code-ran"
    _plant_auto_map(checkpoint, filename, marker)
    result = _run_llava(checkpoint, tmp_path, stdin=stdin)
    assert not marker.exists()
    assert "Do you accept" not in result.stdout + result.stderr
    assert (result.returncode, result.stderr.splitlines()) == (2, [
        "device: cpu (as asked)", f"run_llava: error: {checkpoint}/{filename}: {AUTO_MAP_REFUSED}"])


def test_a_model_base_with_a_transfo_xl_tokenizer_is_refused(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    base = copy_checkpoint(tiny_checkpoint, tmp_path, "base-llm")
    _plant_transfo_xl(base, tmp_path / "pickle-ran")
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(checkpoint), str(base), "llava-v1.5-tiny-projector", device="cpu")
    assert str(err.value) == f"{base}/tokenizer_config.json: {TOKENIZER_CLASS_REFUSED}"


def test_a_model_base_with_auto_map_is_refused(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    base = copy_checkpoint(tiny_checkpoint, tmp_path, "base-llm")
    _plant_auto_map(base, "tokenizer_config.json", tmp_path / "code-ran")
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(checkpoint), str(base), "llava-v1.5-tiny-lora", device="cpu")
    assert str(err.value) == f"{base}/tokenizer_config.json: {AUTO_MAP_REFUSED}"


@pytest.mark.parametrize("filename, fields, message", [
    ("tokenizer_config.json", {"tokenizer_class": "TransfoXLTokenizer"}, TOKENIZER_CLASS_REFUSED),
    ("tokenizer_config.json", {"auto_map": {"AutoTokenizer": ["remote_code.Remote", None]}}, AUTO_MAP_REFUSED),
    ("config.json", {"auto_map": {"AutoConfig": "remote_code.Remote"}}, AUTO_MAP_REFUSED),
], ids=["transfo-xl", "tokenizer-auto-map", "config-auto-map"])
def test_the_llava_hf_layout_refuses_the_same(hf_checkpoint, tmp_path, filename, fields, message):
    checkpoint = Path(shutil.copytree(hf_checkpoint, tmp_path / "llava-1.5-tiny-hf"))
    _edit_json(checkpoint / filename, **fields)
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(checkpoint), None, "llava-1.5-tiny-hf", device="cpu")
    assert str(err.value) == f"{checkpoint}/{filename}: {message}"


def test_the_tokenizer_is_the_slow_llama_one_of_every_layout(tiny_checkpoint, hf_checkpoint):
    for location in (tiny_checkpoint, hf_checkpoint):
        assert type(load_llama_tokenizer(str(location))).__name__ == "LlamaTokenizer"
