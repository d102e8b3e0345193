"""Running the benchmark shell scripts of scripts/v1_5/eval, and a tiny TextVQA data folder for them."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "v1_5" / "eval"


def run_script(script, env_overrides, timeout=300, unset=(), **kwargs):
    """Runs bash with `script`; CKPT, RECIPE, REDUCTION_RATIO, POLICY, OPENAI_API_KEY and the names
    in `unset` are removed from the environment, then `env_overrides` applied."""
    dropped = {"CKPT", "RECIPE", "REDUCTION_RATIO", "POLICY", "OPENAI_API_KEY", *unset}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    # one thread: the tiny model gains nothing from more, and loses much on a busy machine
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHON=sys.executable,
               **env_overrides)
    return subprocess.run(["bash", *script], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, **kwargs)


def tiny_textvqa(eval_dir):
    """Two TextVQA questions (ids are image ids) with images and annotations, under ``eval_dir/textvqa``."""
    data = eval_dir / "textvqa"
    (data / "train_images").mkdir(parents=True)
    rng = np.random.default_rng(5)
    questions, annotations = [], []
    for i, (question, tokens) in enumerate([("what is written here?", "stop, sign"), ("what brand is it?", "")]):
        image_id = f"0a{i}b"
        Image.fromarray(rng.integers(0, 256, size=(30, 44, 3), dtype=np.uint8)).save(
            data / "train_images" / f"{image_id}.jpg")
        lines = [question.capitalize()] + ([f"Reference OCR token: {tokens}"] if tokens else [])
        text = "\n".join(lines + ["Answer the question using a single word or phrase."])
        questions.append({"question_id": image_id, "image": f"{image_id}.jpg", "text": text})
        annotations.append({"image_id": image_id, "question": question.capitalize(), "answers": ["stop"] * 10})
    (data / "llava_textvqa_val_v051_ocr.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (data / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": annotations}))
    return data
