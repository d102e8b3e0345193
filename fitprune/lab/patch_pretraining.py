"""`python -m fitprune.lab.patch_pretraining`: pretrains the relational demo's CLIP-style vision
tower on its scenes, as LLaVA starts from a pretrained CLIP, before the LLaVA stages train the
projector and the decoder (`fitprune.train_demo --task scenes --init-tower DIR`).

The objective is dense: from the features LLaVA feeds the projector (`mm_vision_select_layer`
-2, patch tokens only), linear heads predict for every patch what the scene metadata says it
holds: the colour, shape and size of the object covering it (or background), which part of the
object it is (a small object's only cell, or one of a large object's four), and the patch's own
row and column. A tower that passes this can hand the decoder every fact a question needs, each
at the patches of its object, so what the decoder learns is where to look, which is what token
pruning tests.

    python -m fitprune.lab.patch_pretraining --steps 1500 --output /tmp/scenes-tower

writes the tower (CLIP config, weights, image processor) and `pretraining.json` (command,
settings, per-head accuracy on held-out scenes, wall time) into `--output`.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import CLIPImageProcessor, CLIPVisionModel

from fitprune.lab.scenes.scenes import RelationalScene, RelationalTask, render_scene, sample_scene
from fitprune.lab.lr_schedule import warmup_cosine
from fitprune.lab.tiny_checkpoint import SCENES_SPEC, TinyLlavaSpec, write_vision_tower

SELECT_LAYER = -2
"""The tower layer whose patch features are trained: LLaVA-1.5's `mm_vision_select_layer`."""

RECORD_NAME = "pretraining.json"


def head_sizes(task: RelationalTask) -> Dict[str, int]:
    """Classes of each per-patch target; class 0 of colour, shape, size and part is background."""
    return {"colour": len(task.colours) + 1, "shape": len(task.shapes) + 1, "size": len(task.sizes) + 1,
            "part": 1 + 1 + 4, "row": task.grid, "col": task.grid}


def patch_targets(task: RelationalTask, scene: RelationalScene) -> Dict[str, torch.Tensor]:
    """(grid * grid,) long targets of every head, patches in row-major order (the order of the
    visual tokens).

    Parts: 1 a small object's cell, 2 + (2 * row offset + column offset) a cell of a large
    object's 2x2 box.
    """
    cells = task.grid * task.grid
    targets = {name: torch.zeros(cells, dtype=torch.long) for name in ("colour", "shape", "size", "part")}
    colours, shapes, sizes = list(task.colours), list(task.shapes), list(task.sizes)
    for obj in scene.objects:
        for row in obj.rows:
            for col in obj.cols:
                index = row * task.grid + col
                targets["colour"][index] = colours.index(obj.colour) + 1
                targets["shape"][index] = shapes.index(obj.shape) + 1
                targets["size"][index] = sizes.index(obj.size) + 1
                targets["part"][index] = 1 if obj.span == 1 else 2 + 2 * (row - obj.row) + (col - obj.col)
    positions = torch.arange(cells)
    targets["row"], targets["col"] = positions // task.grid, positions % task.grid
    return targets


@dataclass(frozen=True)
class PretrainConfig:
    """Optimisation settings of the tower pretraining.

    Attributes:
        steps: optimiser steps.
        batch_size: scenes per step.
        lr: peak AdamW learning rate (linear warm-up over 50 steps, then cosine to a tenth).
        seed: torch seed of the initial weights and of the scene stream.
        threads: torch CPU threads.
        eval_scenes: held-out scenes the final accuracies are measured on.
    """

    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    threads: int = 2
    eval_scenes: int = 256


class PatchHeads(torch.nn.Module):
    """One linear classifier per target over the tower's selected patch features."""

    def __init__(self, hidden_size: int, sizes: Dict[str, int]):
        super().__init__()
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(hidden_size, n) for name, n in sizes.items()})

    def forward(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, P, classes) logits per head from (N, P, hidden) features."""
        return {name: head(features) for name, head in self.heads.items()}


def patch_features(tower: CLIPVisionModel, pixels: torch.Tensor) -> torch.Tensor:
    """(N, P, hidden) features of layer `SELECT_LAYER` without the CLS token, as LLaVA selects them."""
    return tower(pixels, output_hidden_states=True).hidden_states[SELECT_LAYER][:, 1:]


def _batch(task: RelationalTask, processor: CLIPImageProcessor, rng: random.Random, size: int):
    scenes = [sample_scene(task, rng) for _ in range(size)]
    pixels = processor([render_scene(task, s) for s in scenes], return_tensors="pt")["pixel_values"]
    targets = [patch_targets(task, s) for s in scenes]
    return pixels, {name: torch.stack([t[name] for t in targets]) for name in targets[0]}


def accuracies(tower: CLIPVisionModel, heads: PatchHeads, pixels: torch.Tensor,
               targets: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Percent of patches each head gets right; for colour, shape, size and part also over the
    object patches alone (``<head>_objects``), where background cannot inflate it."""
    with torch.no_grad():
        logits = heads(patch_features(tower, pixels))
    result = {}
    objects = targets["colour"] > 0
    for name, head_logits in logits.items():
        correct = head_logits.argmax(dim=-1) == targets[name]
        result[name] = round(100.0 * correct.float().mean().item(), 2)
        if name in ("colour", "shape", "size", "part"):
            result[f"{name}_objects"] = round(100.0 * correct[objects].float().mean().item(), 2)
    return result


def pretrain(tower: CLIPVisionModel, processor: CLIPImageProcessor, task: RelationalTask,
             config: PretrainConfig) -> List[dict]:
    """Trains `tower` in place on the per-patch targets; returns the log (loss by step and the
    held-out accuracies at the end)."""
    rng = random.Random(f"patch-pretraining-{config.seed}")
    held_out = _batch(task, processor, random.Random(f"patch-pretraining-eval-{config.seed}"), config.eval_scenes)
    heads = PatchHeads(tower.config.hidden_size, head_sizes(task))
    parameters = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = min(50, config.steps)
    log, running = [], []
    bar = tqdm(range(config.steps), desc="tower", unit="step")
    tower.train()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, config.steps, warmup, config.lr)
        pixels, targets = _batch(task, processor, rng, config.batch_size)
        logits = heads(patch_features(tower, pixels))
        loss = sum(F.cross_entropy(logits[name].flatten(0, 1), targets[name].flatten()) for name in logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        running.append(loss.item())
        if (step + 1) % 250 == 0 or step + 1 == config.steps:
            log.append({"step": step + 1, "loss": round(sum(running) / len(running), 4)})
            running = []
            bar.write(json.dumps(log[-1]))
    tower.eval()
    log.append({"step": config.steps, "held_out_accuracy": accuracies(tower, heads, *held_out)})
    return log


def read_pretrained_tower(directory: Path) -> Tuple[dict, dict]:
    """The weights and `pretraining.json` record of a tower written by this module.

    Raises:
        FileNotFoundError: naming the first missing file.
    """
    for name in ("config.json", RECORD_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: --init-tower needs a tower written by "
                                    "python -m fitprune.lab.patch_pretraining")
    state = CLIPVisionModel.from_pretrained(directory).state_dict()
    return state, json.loads((directory / RECORD_NAME).read_text())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Pretrains and writes the tower; returns the exit code."""
    defaults = PretrainConfig()
    parser = argparse.ArgumentParser(prog="python -m fitprune.lab.patch_pretraining",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="directory to write the tower into")
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    config = PretrainConfig(**{name: getattr(args, name) for name in asdict(defaults)})
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    started = time.time()
    spec: TinyLlavaSpec = SCENES_SPEC
    task = RelationalTask(image_size=spec.image_size, cell_size=spec.patch_size)
    out_dir = write_vision_tower(Path(args.output), spec)
    tower = CLIPVisionModel.from_pretrained(out_dir)
    processor = CLIPImageProcessor.from_pretrained(out_dir)
    log = pretrain(tower, processor, task, config)
    tower.save_pretrained(out_dir, safe_serialization=False)
    record = {
        "command": "python -m fitprune.lab.patch_pretraining " + " ".join(shlex.quote(a) for a in
                                                                         (argv if argv is not None else sys.argv[1:])),
        "spec": asdict(spec),
        "task": asdict(task),
        "pretrain": asdict(config),
        "heads": head_sizes(task),
        "log": log,
        "wall_time_s": round(time.time() - started, 1),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    (out_dir / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out_dir} in {record['wall_time_s']:.0f} s; held-out accuracy {json.dumps(log[-1]['held_out_accuracy'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
