"""The shipped demo models: the shapes model answers its fixed test split and pruning quality is measurable
on it; `python -m fitprune.demo` runs the scenes model by default and the shapes one with --model shapes."""
import re

import pytest

from fitprune.lab.answers import answer_accuracy, encode_questions, load_answered_questions
from fitprune.defaults import DEMO_MODEL_PATH, SHAPES_DIR, SHAPES_TEST_FILE, ensure_default_model
from fitprune.lab.demo import main as demo_main
from llava.model.pruning.policies import RandomPolicy
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.model.pruning.recipe import RecipeBook
from fitprune.lab.baselines import pruner_installed
from llava.model.builder import load_pretrained_model

# the first questions of the committed test split (one of each kind per image)
NUM_QUESTIONS = 200
# percentage points random pruning at 90% must lose (4.5 measured on these 200 questions)
RANDOM_LOSS_AT_90 = 3.0


@pytest.fixture(scope="module")
def demo():
    """(model, encoded test batches) of the shipped demo model."""
    path = ensure_default_model(DEMO_MODEL_PATH)
    tokenizer, model, processor, _ = load_pretrained_model(path, None, "llava-v1.5-shapes", device="cpu")
    model.eval()
    questions = load_answered_questions(SHAPES_TEST_FILE, NUM_QUESTIONS)
    batches = encode_questions(questions, tokenizer, processor, model.config, SHAPES_DIR, batch_size=50)
    return model, batches


@pytest.fixture(scope="module")
def unpruned(demo):
    model, batches = demo
    return answer_accuracy(model, batches)


def _accuracy_with(model, batches, policy, keep_counts):
    """Accuracy with `policy` pruning to `keep_counts`; the schedule is removed afterwards."""
    with pruner_installed(model, policy, keep_counts):
        return answer_accuracy(model, batches)


def test_unpruned_accuracy_is_at_least_90_percent(unpruned):
    assert unpruned.total == NUM_QUESTIONS
    assert unpruned.accuracy >= 90.0, unpruned.per_kind


def test_answers_need_visual_tokens_after_the_first_layer(demo, unpruned):
    """Dropping every visual token after layer 0 costs accuracy (about 25 points on the
    whole test split): later layers still read visual tokens."""
    model, batches = demo
    num_layers = model.config.num_hidden_layers
    blind = _accuracy_with(model, batches, RandomPolicy(0), (0,) * num_layers)
    assert model.last_pruning_trace.counts()[0].tolist() == [0] * batches[-1].input_ids.shape[0]
    assert blind.accuracy <= unpruned.accuracy - 15.0, (blind.per_kind, unpruned.per_kind)


def test_random_pruning_at_90_percent_loses_accuracy(demo, unpruned):
    """Random pruning with the shipped 90% recipe's keep counts costs accuracy (shape
    questions most). FitPrune does not beat it on this model (BENCHMARKS.md says why)."""
    model, batches = demo
    recipe = RecipeBook.load(f"{DEMO_MODEL_PATH}/{RECIPE_FILE_IN_CHECKPOINT}").get(90)
    assert recipe.achieved_paper >= 90.0
    random = _accuracy_with(model, batches, RandomPolicy(0), recipe.keep_counts)
    assert model.last_pruning_trace.counts()[-1].tolist() == [recipe.keep_counts[-1]] * batches[-1].input_ids.shape[0]
    assert random.accuracy <= unpruned.accuracy - RANDOM_LOSS_AT_90, (random.per_kind, unpruned.per_kind)


def _demo_table(capsys, *flags):
    """`python -m fitprune.demo` on 5 questions at 90% with FastV as the only other method: (header
    line naming the model, table rows)."""
    assert demo_main(["--limit", "5", "--reduction-ratio", "90", "--methods", "fastv", *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    return next(line for line in lines if line.startswith("model ")), [line for line in lines if line.startswith("| ")]


def test_the_demo_runs_the_scenes_model_by_default(capsys):
    header, rows = _demo_table(capsys)
    assert header.startswith("model playground/models/llava-v1.5-scenes;") and "first 5 questions" in header
    assert rows[0].split(" | ")[2:4] == ["FitPrune", "random (same counts)"] and "oracle (same counts)" in rows[0]
    cells = rows[1].split(" | ")
    assert cells[0] == "| 90" and cells[4].startswith("FastV ") and len(cells) == 8
    assert re.search(r" · \d+% paper$", cells[4])  # the best other method's own FLOPs, beside its accuracy


def test_the_demo_flag_picks_the_shapes_model(capsys):
    header, rows = _demo_table(capsys, "--model", "shapes")
    assert header.startswith(f"model {DEMO_MODEL_PATH};")
    assert "oracle" not in rows[0] and len(rows[1].split(" | ")) == 7  # shapes questions name no cells
