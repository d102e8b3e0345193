"""The oracle policy keeps the referred cells first; headroom helpers (chance, merged reports)."""
import pytest
import torch

from fitprune.lab.answers import AccuracyReport
from fitprune.lab.baselines import pruner_installed
from fitprune.lab.oracle import OraclePolicy, chance_accuracy, merge_reports
from llava.model.language_model.sequence_layout import SEGMENT_TEXT, SEGMENT_VISUAL, SequenceLayout
from llava.model.pruning.policies import RandomPolicy
from tests.helpers import QUESTIONS, build_prompt, encode_batch, sample_images

CELLS = [[5, 6, 140], [0], [], [77, 78, 79, 80, 81]]


def test_oracle_scores_the_referred_cells_above_every_other_visual_row():
    visual_index = torch.arange(10).repeat(2, 1)
    segment = torch.full((2, 10), SEGMENT_VISUAL)
    segment[:, 0] = SEGMENT_TEXT
    visual_index[:, 0] = -1
    layout = SequenceLayout.from_segments(segment, visual_index)
    policy = OraclePolicy(seed=3)
    policy.set_cells([[7, 2], []])
    scores = policy.score(0, None, layout)
    assert set(scores[0, 1:].topk(2).indices.add(1).tolist()) == {2, 7}
    assert torch.equal(scores[1], RandomPolicy(3).score(0, None, layout)[1])  # no cells: random's order


def test_oracle_refuses_cells_of_another_batch_size():
    layout = SequenceLayout.from_segments(torch.full((2, 3), SEGMENT_VISUAL), torch.arange(3).repeat(2, 1))
    policy = OraclePolicy()
    with pytest.raises(ValueError, match="call set_cells before each batch"):
        policy.score(0, None, layout)
    policy.set_cells([[1]])
    with pytest.raises(ValueError, match="cells set for 1 samples, the batch has 2"):
        policy.score(0, None, layout)


def test_a_pruned_forward_keeps_the_oracle_cells_at_every_layer(tiny):
    tokenizer, model, processor = tiny
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS], "left")
    images = sample_images(processor, model.config, len(QUESTIONS))
    counts = (20, 10, 5, 5)
    policy = OraclePolicy()
    policy.set_cells(CELLS)
    with pruner_installed(model, policy, counts), torch.no_grad():
        trace = model(input_ids=ids, attention_mask=mask, images=images, use_cache=False).pruning_trace
    for layer, count in enumerate(counts):
        for b, cells in enumerate(CELLS):
            kept = set(trace.kept_indices(layer, b).tolist())
            assert len(kept) == count
            assert set(cells) <= kept


def test_chance_is_the_best_constant_answer_per_kind_and_answer_type():
    records = ([{"kind": "relation", "answer": "red"}] * 3 + [{"kind": "relation", "answer": "blue"}]
               + [{"kind": "relation", "answer": "ring"}] * 2 + [{"kind": "count", "answer": "two"},
                                                                  {"kind": "count", "answer": "one"}])
    chance = chance_accuracy(records, ["red", "blue"], ["ring"])
    assert chance == pytest.approx({"count": 50.0, "relation": 500 / 6, "all": 75.0})


def test_merged_reports_add_their_counts():
    merged = merge_reports([AccuracyReport(1, 2, {"a": (1, 2)}), AccuracyReport(3, 4, {"a": (1, 1), "b": (2, 3)})])
    assert merged == AccuracyReport(4, 6, {"a": (2, 3), "b": (2, 3)})


def test_a_missing_question_file_is_a_one_line_error(tmp_path, capsys):
    from fitprune.lab.oracle import main

    assert main(["--question-file", str(tmp_path / "none.jsonl")]) == 2
    assert capsys.readouterr().err == (f"python -m fitprune.lab.oracle: error: --question-file: "
                                       f"{tmp_path}/none.jsonl does not exist\n")
