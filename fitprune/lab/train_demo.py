"""`python -m fitprune.train_demo`: trains the bundled demo model, a small LLaVA-1.5 on the
synthetic shapes task (`fitprune.lab.shapes.data`), on CPU, and writes it as a checkpoint.

The shipped model (`playground/models/llava-v1.5-shapes`) comes from a curriculum of three
runs, each starting from the previous one's weights (`--init-from`): scenes of one object
(the model learns to find an object and read its colour and shape), then of three (it
starts binding a named attribute to one object among several), then of two, the default
task of `playground/shapes`:

    python -m fitprune.train_demo --objects 1 --steps 5000 --output /tmp/llava-shapes-1
    python -m fitprune.train_demo --init-from /tmp/llava-shapes-1 --objects 3 --steps 2000 --lr 5e-4 \
        --output /tmp/llava-shapes-3
    python -m fitprune.train_demo --init-from /tmp/llava-shapes-3 --objects 2 --steps 2000 \
        --output playground/models/llava-v1.5-shapes

Trained from random weights on two-object scenes alone, the shapes model stays at chance for
thousands of steps. Runs are deterministic on a given machine: the last two commands, rerun
on 2026-12-01 from the first run's checkpoint, gave bitwise the shipped weights. The checkpoint's `training.json` holds each run's command, settings,
validation log and wall time (`init_from` nests the previous run's record).

The relational scenes model (`--task scenes`, `playground/scenes`: 5-8 objects on a 16x16
grid, 256 visual tokens) starts from a vision tower pretrained on per-patch targets
(`fitprune.lab.patch_pretraining`, as LLaVA starts from a pretrained CLIP), kept frozen while
the projector and the decoder learn the questions; later stages continue with `--init-from`:

    python -m fitprune.lab.patch_pretraining --steps 1000 --output /tmp/scenes-tower
    python -m fitprune.train_demo --task scenes --init-tower /tmp/scenes-tower --freeze-tower \
        --steps 3200 --eval-every 400 --max-minutes 55 --output /tmp/llava-v1.5-scenes
    python -m fitprune.train_demo --task scenes --init-from /tmp/llava-v1.5-scenes --reuse-tokenizer \
        --freeze-tower --steps 2800 --eval-every 400 --max-minutes 42 --seed 1 --output /tmp/llava-v1.5-scenes-2
    python -m fitprune.train_demo --task scenes --init-from /tmp/llava-v1.5-scenes-2 --reuse-tokenizer \
        --freeze-tower --presence-follow-up --steps 950 --lr 5e-4 --warmup-steps 20 --eval-every 400 \
        --max-minutes 18.5 --seed 2 --output OUT

The third stage also asks presence questions second in a conversation (`--presence-follow-up`;
a training conversation otherwise asks one only first, so presence was 5 % of the training
questions against 20 % of the splits): test accuracy 57.5 -> 64.7 %, presence 55.5 -> 70.3 %.

`--hidden-size`, `--intermediate-size`, `--num-hidden-layers` and `--num-attention-heads` change the
decoder's sizes from the task's spec; `training.json` records them, and an `--init-from` stage keeps
its checkpoint's sizes unless told otherwise.

The model is LLaVA-1.5's architecture at toy size (`DEMO_SPEC`): a CLIP vision tower
(8 px patches on 96 px images: 144 visual tokens, one per cell of the shapes grid), the
mlp2x_gelu projector and a LLaMA decoder, with a SentencePiece tokenizer trained here that
holds every answer as one piece. Everything is trained end to end with AdamW on the answer
tokens of multi-turn vicuna_v1 conversations (one question of each kind about one image per
sequence, as in LLaVA's instruction data; the first turn is exactly the single-turn eval
prompt). The checkpoint has LLaVA-1.5's layout (`fitprune.lab.demo_checkpoint`) plus
`training.json`.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from fitprune.lab.answers import answer_accuracy, answer_token, encode_questions, load_answered_questions, pad_right
from fitprune.lab.demo_checkpoint import (
    build_untrained,
    load_initial_weights,
    load_tower,
    read_checkpoint_weights,
    reuse_tokenizer,
    save_checkpoint,
    training_record,
)
from fitprune.lab.shapes.scenes import ShapesTask, render_scene
from fitprune.lab.shapes.questions import VisualQuestion, train_conversations
from fitprune.lab.scenes import questions as scene_questions, scenes as relational_scenes
from fitprune.lab.lr_schedule import warmup_cosine
from fitprune.lab.shapes.data import tokenizer_sentences
from llava.constants import IGNORE_INDEX
from llava.eval.driver.questions import build_question_prompt
from llava.utils import usage_error
from fitprune.lab.tiny_checkpoint import DEMO_SPEC, SCENES_SPEC, TinyLlavaSpec

logger = logging.getLogger(__name__)

CONV_MODE = "vicuna_v1"


@dataclass(frozen=True)
class DemoTask:
    """A task a demo model is trained on, with the model's sizes.

    Attributes:
        spec: the model's sizes.
        make_task: objects per scene (None: the task's default) -> the task's settings.
        conversations: (task, seed) -> endless stream of (scene, questions).
        render: (task, scene) -> the scene's image.
        sentences: task -> extra tokenizer sentences holding every question and answer.
        validation_file, validation_folder: default validation questions and their image folder.
    """

    spec: TinyLlavaSpec
    make_task: Callable[[Optional[int]], object]
    conversations: Callable
    render: Callable
    sentences: Callable
    validation_file: str
    validation_folder: str


def _with_objects(default_task):
    """make_task of a task dataclass: its defaults, or exactly `objects` objects per scene."""
    def make(objects: Optional[int]):
        task = default_task()
        return task if objects is None else replace(task, min_objects=objects, max_objects=objects)
    return make


DEMO_TASKS: Dict[str, DemoTask] = {
    "shapes": DemoTask(DEMO_SPEC, _with_objects(ShapesTask), train_conversations, render_scene, tokenizer_sentences,
                       "playground/shapes/calibration.jsonl", "playground/shapes"),
    "scenes": DemoTask(SCENES_SPEC, _with_objects(relational_scenes.RelationalTask),
                       scene_questions.train_conversations, relational_scenes.render_scene,
                       scene_questions.tokenizer_sentences, "playground/scenes/calibration.jsonl",
                       "playground/scenes"),
}
"""Tasks `--task` can name: the bundled shapes demo (the default) and the relational scenes."""


DECODER_SIZE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
"""The decoder sizes `--hidden-size` etc. override in a task's model spec."""


def decoder_sized(spec: TinyLlavaSpec, sizes: Dict[str, Optional[int]]) -> TinyLlavaSpec:
    """`spec` with the given decoder sizes (None keeps the spec's); new attention heads bring as many
    key/value heads.

    Raises:
        ValueError: the hidden size is not a multiple of the attention heads.
    """
    chosen = {name: value for name, value in sizes.items() if value is not None}
    if "num_attention_heads" in chosen:
        chosen["num_key_value_heads"] = chosen["num_attention_heads"]
    sized = replace(spec, **chosen)
    if sized.hidden_size % sized.num_attention_heads:
        raise ValueError(f"--hidden-size {sized.hidden_size} is not a multiple of --num-attention-heads "
                         f"{sized.num_attention_heads}")
    return sized


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        steps: optimiser steps.
        batch_size: conversations (images) per step.
        lr: peak learning rate of AdamW.
        warmup_steps: linear warm-up steps, then cosine decay to `lr / 10`.
        weight_decay: AdamW weight decay.
        seed: torch seed of the initial weights and of the train stream.
        eval_every: steps between validation runs (0: only at the end).
        threads: torch CPU threads.
        max_minutes: stop after the first step past this wall time (0: no limit).
    """

    steps: int = 5000
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    eval_every: int = 250
    threads: int = 2
    max_minutes: float = 0.0


def conversation_tokens(tokenizer, questions: Sequence[VisualQuestion]) -> Tuple[List[int], List[int]]:
    """Token ids and labels of a multi-turn vicuna_v1 conversation about one image.

    The first turn is the single-turn eval prompt with the image placeholder, later turns
    the questions alone (with the answer-format suffix); each answer is its one token plus </s>, the only
    labelled positions.

    Returns:
        (input_ids, labels), same length; labels are IGNORE_INDEX on prompt tokens.
    """
    from llava.mm_utils import tokenizer_image_token

    ids, labels = [], []
    for index, question in enumerate(questions):
        if index == 0:
            prompt = tokenizer_image_token(build_question_prompt(question.text, CONV_MODE), tokenizer)
        else:
            prompt = tokenizer(f"USER: {question.text} ASSISTANT:", add_special_tokens=False).input_ids
        answer = [answer_token(tokenizer, question.answer), tokenizer.eos_token_id]
        ids += prompt + answer
        labels += [IGNORE_INDEX] * len(prompt) + answer
    return ids, labels


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up to `config.lr`, then cosine decay to a tenth of it."""
    return warmup_cosine(step, config.steps, config.warmup_steps, config.lr)


def train(model, tokenizer, image_processor, task: ShapesTask, config: TrainConfig, validation=None,
          demo: DemoTask = DEMO_TASKS["shapes"]) -> List[dict]:
    """Trains `model` in place; returns the log (loss and validation accuracy by step).

    Args:
        validation: encoded batches (`fitprune.lab.answers.encode_questions`) to measure
            first-token accuracy on every `config.eval_every` steps and at the end.
        demo: the task's train stream and renderer.
    """
    from llava.mm_utils import process_images

    started = time.time()
    stream = demo.conversations(task, config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.98))
    log, running = [], []
    bar = tqdm(range(config.steps), desc="train", unit="step")
    for step in bar:
        scenes, rows, row_labels = [], [], []
        for _ in range(config.batch_size):
            scene, questions = next(stream)
            ids, labels = conversation_tokens(tokenizer, questions)
            scenes.append(demo.render(task, scene))
            rows.append(ids)
            row_labels.append(labels)
        input_ids = pad_right(rows)
        labels = pad_right(row_labels, IGNORE_INDEX)
        attention_mask = pad_right([[1] * len(r) for r in rows])
        images = process_images(scenes, image_processor, model.config)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        model.train()
        loss = model(input_ids=input_ids, attention_mask=attention_mask, images=images, labels=labels,
                     use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running.append(loss.item())
        out_of_time = bool(config.max_minutes) and time.time() - started > 60 * config.max_minutes
        last = step + 1 == config.steps or out_of_time
        if validation is not None and ((config.eval_every and (step + 1) % config.eval_every == 0) or last):
            model.eval()
            report = answer_accuracy(model, validation)
            entry = {"step": step + 1, "loss": sum(running) / len(running), "accuracy": report.accuracy,
                     "per_kind": {k: report.kind_accuracy(k) for k in report.per_kind}}
            log.append(entry)
            running = []
            bar.write(json.dumps(entry))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if out_of_time:
            bar.write(f"stopped after {step + 1} steps: --max-minutes {config.max_minutes} reached")
            break
    model.eval()
    return log


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Trains and writes the demo model; returns the exit code."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m fitprune.train_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="checkpoint directory to write (its name should hold 'llava')")
    parser.add_argument("--task", choices=sorted(DEMO_TASKS), default="shapes",
                        help="shapes: the bundled demo (playground/shapes); scenes: the relational scenes "
                             "(playground/scenes, fitprune.lab.scenes.questions)")
    parser.add_argument("--validation-file", default=None,
                        help="question jsonl with answers, for accuracy during training "
                             "(default: the task's calibration split)")
    parser.add_argument("--validation-folder", default=None, help="its image folder (default: the task's)")
    parser.add_argument("--objects", type=int, default=None,
                        help="objects per scene (default: the task's, as in its playground folder)")
    parser.add_argument("--presence-follow-up", action="store_true",
                        help="scenes: conversations that start with another kind also ask a presence question "
                             "second, about a colour and a shape the first turn does not name (presence is then "
                             "about 20%% of the training questions, as in the splits, instead of 5%%)")
    parser.add_argument("--init-from", default=None,
                        help="start from this checkpoint's weights (one written by this script) instead of random ones")
    parser.add_argument("--init-tower", default=None,
                        help="start the vision tower from this pretrained one (written by python -m "
                             "fitprune.lab.patch_pretraining); its record joins training.json")
    parser.add_argument("--freeze-tower", action="store_true",
                        help="keep the vision tower's weights as they start (as LLaVA keeps CLIP's)")
    parser.add_argument("--reuse-tokenizer", action="store_true",
                        help="with --init-from: keep that checkpoint's tokenizer (for a stage whose task has other "
                             "answers, e.g. more count words); each answer must be one of its pieces")
    for name in DECODER_SIZE_FIELDS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                            help=f"decoder {name} (default: the --init-from checkpoint's, else the task's model "
                                 "spec); key/value heads follow the attention heads")
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    config = TrainConfig(**{name: getattr(args, name) for name in asdict(defaults)})
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(config.threads)
    started = time.time()
    out_dir = Path(args.output)
    try:
        demo = DEMO_TASKS[args.task]
        task = demo.make_task(args.objects)
        if args.presence_follow_up:
            if not hasattr(task, "presence_follow_up"):
                raise ValueError(f"--presence-follow-up applies to --task scenes only, not {args.task}")
            task = replace(task, presence_follow_up=True)
        initial = read_checkpoint_weights(Path(args.init_from)) if args.init_from else None
        previous = training_record(Path(args.init_from)) if args.init_from else None
        inherited = (previous or {}).get("spec", {})  # a later stage keeps its checkpoint's decoder sizes
        base = replace(demo.spec, **{name: inherited[name] for name in (*DECODER_SIZE_FIELDS, "num_key_value_heads")
                                     if name in inherited})
        spec = decoder_sized(base, {name: getattr(args, name) for name in DECODER_SIZE_FIELDS})
        tokenizer, model, image_processor = build_untrained(out_dir, spec, task, config.seed, demo.sentences)
        if args.reuse_tokenizer and initial is not None:
            tokenizer = reuse_tokenizer(out_dir, Path(args.init_from), task)
        if initial is not None:
            load_initial_weights(model, out_dir, initial)
        tower_record = load_tower(model, Path(args.init_tower)) if args.init_tower else None
        model.get_model().get_vision_tower().vision_tower.requires_grad_(not args.freeze_tower)
        validation = encode_questions(load_answered_questions(args.validation_file or demo.validation_file),
                                      tokenizer, image_processor, model.config,
                                      args.validation_folder or demo.validation_folder)
    except (FileNotFoundError, ValueError) as err:  # a QuestionFileError is a ValueError
        return usage_error(parser.prog, err)
    log = train(model, tokenizer, image_processor, task, config, validation, demo)
    save_checkpoint(model, out_dir)
    record = {
        "command": "python -m fitprune.train_demo " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "spec": asdict(spec),
        "task": asdict(task),
        "train": asdict(config),
        "log": log,
        "wall_time_s": round(time.time() - started, 1),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "init_from": previous,
        "init_tower": tower_record,
    }
    earlier = [r.get("total_wall_time_s", r["wall_time_s"]) for r in (previous, tower_record) if r is not None]
    if earlier:
        record["total_wall_time_s"] = round(record["wall_time_s"] + sum(earlier), 1)
    (out_dir / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out_dir} in {record['wall_time_s']:.0f} s; validation accuracy {log[-1]['accuracy']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
