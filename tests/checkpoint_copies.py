"""Copies of the tiny checkpoint for tests that damage or booby-trap one, and the pickle payload
they plant."""
import builtins
import shutil
from pathlib import Path

from llava.model.convert import main as convert_main


class WritesAFile:
    """Unpickled, it opens (creates) `path` for writing: what a malicious checkpoint could do."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return builtins.open, (str(self.path), "w")


def copy_checkpoint(checkpoint: Path, folder: Path, name: str = "llava-v1.5-tiny") -> Path:
    """A copy of a checkpoint whose config names the copy's own vision tower."""
    copy = Path(shutil.copytree(checkpoint, folder / name))
    config = copy / "config.json"
    config.write_text(config.read_text().replace(str(checkpoint), str(copy)))
    assert str(copy / "clip-vision-tower") in config.read_text()
    return copy


def converted_to_hf(checkpoint: Path, folder: Path, name: str = "llava-1.5-tiny-hf") -> Path:
    """`checkpoint` written in the llava-hf layout into ``folder/name`` by the converter."""
    out = folder / name
    assert convert_main(["--to", "hf", str(checkpoint), str(out)]) == 0
    return out
