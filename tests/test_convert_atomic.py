"""`python -m llava.model.convert` writes its checkpoint so that it appears only complete (issue 27,
fault 5): a run killed with SIGKILL late in the conversion leaves no loadable target, and the rerun
succeeds and loads."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llava.model.builder import load_pretrained_model
from llava.model.convert import main as convert_main
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.model.staged_folder import remove_dead_staging, staging_folder

REPO = Path(__file__).resolve().parents[1]
# a conversion that kills itself (SIGKILL, as kill -9) when it reaches its last step, copying the recipes
KILLED_AT_THE_LAST_STEP = """
import os, signal, sys
import llava.model.convert as convert
convert._copy_recipes = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
convert.main(sys.argv[1:])
"""


def _staging_siblings(target: Path):
    return sorted(target.parent.glob(f".{target.name}.partial-*"))


def _is_complete_hf_checkpoint(path: Path) -> bool:
    names = {p.name for p in path.iterdir()}
    weights = {"model.safetensors", "model.safetensors.index.json"} & names
    return bool(weights) and {"config.json", "generation_config.json", "tokenizer.model",
                              RECIPE_FILE_IN_CHECKPOINT} <= names


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "empty-folder"])
def test_a_killed_conversion_leaves_no_checkpoint_and_a_rerun_succeeds(tiny_checkpoint, tmp_path, existing):
    target = tmp_path / "out" / "llava-v1.5-tiny-hf"
    if existing:
        target.mkdir(parents=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_THE_LAST_STEP, "--to", "hf", str(tiny_checkpoint),
                             str(target)], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # the weights, config and tokenizer were written, but only into the hidden sibling
    [partial] = _staging_siblings(target)
    assert (partial / "config.json").is_file() and not (partial / RECIPE_FILE_IN_CHECKPOINT).exists()
    assert (not target.exists()) if not existing else list(target.iterdir()) == []

    assert convert_main(["--to", "hf", str(tiny_checkpoint), str(target)]) == 0
    assert _staging_siblings(target) == [], "the dead run's folder is removed"
    assert _is_complete_hf_checkpoint(target)
    _, model, _, _ = load_pretrained_model(str(target), None, target.name, device="cpu")
    assert model.config.hf_checkpoint["model_type"] == "llava"


def test_a_failed_conversion_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import llava.model.convert as convert

    def full_disk(src, dst):
        raise OSError(28, "No space left on device", str(dst / RECIPE_FILE_IN_CHECKPOINT))

    monkeypatch.setattr(convert, "_copy_recipes", full_disk)
    target = tmp_path / "llava-hf"
    with pytest.raises(SystemExit) as exit_info:
        convert_main(["--to", "hf", str(tiny_checkpoint), str(target)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("convert: error: [Errno 28] No space left on device: ")
    assert not target.exists() and _staging_siblings(target) == []


def test_only_the_folders_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "llava-hf"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = staging_folder(target, int(finished.stdout)), staging_folder(target, os.getppid())
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({}))
    assert remove_dead_staging(target) == [dead]
    assert _staging_siblings(target) == [alive]
