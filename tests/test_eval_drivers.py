"""The generation drivers on the tiny checkpoint: batching, resuming, chunking, pruning,
the run record, our greedy loop against `generate`, and each driver's question format."""
import base64
import json
from io import BytesIO

import numpy as np
import pytest
import torch
from PIL import Image

from llava.model.pruning.recipe import RecipeBook
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.eval.driver.flags import build_parser
from llava.eval import model_vqa, model_vqa_loader, model_vqa_mmbench, model_vqa_science
from llava.eval.driver import loop as driver_loop
from llava.eval.driver.batch_generation import PreparedSample, answer_text, collate, greedy_generate
from llava.eval.driver.items import EvalItem, get_chunk, split_list
from llava.eval.records.sidecar_files import RUN_RECORD_SUFFIX, RUN_STATS_SUFFIX, sidecar_path
from tests.driver_runs import driver_argv, ids_and_texts, read_rows
from tests.helpers import QUESTIONS, TINY_KEEP_COUNTS, build_prompt, encode_batch, sample_images


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny model gains nothing from more threads, and loses much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_batch_of_four_writes_the_answers_of_batch_of_one(tiny_checkpoint, vqa_data, preloaded, tmp_path):
    question_file, folder = vqa_data
    one, four = tmp_path / "one.jsonl", tmp_path / "four.jsonl"
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, one, "--batch-size", "1")) == 0
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, four, "--batch-size", "4")) == 0

    rows_one, rows_four = read_rows(one), read_rows(four)
    assert [type(r["question_id"]) for r in rows_four] == [str, int, str, int, str]
    assert ids_and_texts(rows_four) == ids_and_texts(rows_one)
    assert [r["prompt"] for r in rows_four] == [json.loads(q)["text"] for q in question_file.read_text().splitlines()]
    assert any(r["text"] for r in rows_one), "the tiny model answered nothing; the comparison would be vacuous"
    assert set(rows_four[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    record = json.loads(sidecar_path(four, RUN_RECORD_SUFFIX).read_text())
    assert record["timing"]["batch_sizes"] == [1, 4]
    assert record["samples"] == {"answered": 5, "measured": 5, "with_image": 5}


def test_an_interrupted_run_resumes_to_the_uninterrupted_answers(tiny_checkpoint, vqa_data, preloaded, tmp_path,
                                                                   monkeypatch):
    question_file, folder = vqa_data
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, whole)) == 0

    real_generate = driver_loop.generate_batch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(driver_loop, "generate_batch", interrupted)
    argv = driver_argv(tiny_checkpoint, question_file, folder, resumed, "--batch-size", "2")
    with pytest.raises(KeyboardInterrupt):
        model_vqa_loader.main(argv)
    assert len(read_rows(resumed)) == 2, "the first batch is on disk, the one in flight is lost"
    with resumed.open("a") as handle:  # a write cut short
        handle.write('{"question_id": "img2", "te')
    monkeypatch.setattr(driver_loop, "generate_batch", real_generate)

    assert model_vqa_loader.main(argv) == 0
    assert ids_and_texts(read_rows(resumed)) == ids_and_texts(read_rows(whole))
    record = json.loads(sidecar_path(resumed, RUN_RECORD_SUFFIX).read_text())
    assert record["samples"]["answered"] == record["samples"]["measured"] == 5
    assert len(record["runs"]) == 1, "the interrupted run wrote no run entry"
    assert record["runs"][0]["samples"] == 3

    loads_before = len(preloaded)
    assert model_vqa_loader.main(argv) == 0
    assert len(preloaded) == loads_before, "nothing left to answer: the model is not loaded"
    assert len(read_rows(resumed)) == 5


def test_a_partial_answers_file_is_completed(tiny_checkpoint, vqa_data, preloaded, tmp_path):
    question_file, folder = vqa_data
    whole, partial = tmp_path / "whole.jsonl", tmp_path / "partial.jsonl"
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, whole)) == 0
    partial.write_text("".join(line + "\n" for line in whole.read_text().splitlines()[:2]))

    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, partial, "--batch-size", "3")) == 0
    assert ids_and_texts(read_rows(partial)) == ids_and_texts(read_rows(whole))
    record = json.loads(sidecar_path(partial, RUN_RECORD_SUFFIX).read_text())
    assert record["samples"]["answered"] == 5
    assert record["samples"]["measured"] == 3, "only this run's answers have statistics"


def test_repeated_question_ids_resume_by_count_in_file_order(tiny_checkpoint, vqa_data, preloaded, tmp_path):
    """TextVQA's question_id is the image id, shared by an image's questions."""
    question_file, folder = vqa_data
    lines = [json.loads(line) for line in question_file.read_text().splitlines()]
    for line in lines:
        line["question_id"] = "shared" if line["image"] in ("0.png", "1.png", "3.png") else line["question_id"]
    repeated = tmp_path / "repeated.jsonl"
    repeated.write_text("".join(json.dumps(line) + "\n" for line in lines))
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, repeated, folder, whole)) == 0
    assert [row["question_id"] for row in read_rows(whole)] == ["shared", "shared", "img2", "shared", "img4"]
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, repeated, folder, resumed)) == 0
    kept = resumed.read_text().splitlines()[:2]  # as if killed after the second answer
    resumed.write_text("\n".join(kept) + "\n")
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, repeated, folder, resumed)) == 0
    assert [(r["question_id"], r["prompt"], r["text"]) for r in read_rows(resumed)] == \
        [(r["question_id"], r["prompt"], r["text"]) for r in read_rows(whole)]


def test_resuming_with_other_answer_settings_is_refused(tiny_checkpoint, vqa_data, preloaded, tmp_path, capsys):
    question_file, folder = vqa_data
    answers = tmp_path / "a.jsonl"
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, answers)) == 0
    capsys.readouterr()
    code = model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, answers,
                                             "--reduction-ratio", "50"))
    assert code == 2
    err = capsys.readouterr().err
    assert "reduction_ratio: 0.0 then, 50.0 now" in err and str(answers) in err
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, answers, "--reduction-ratio", "50",
                                             "--overwrite")) == 0


def test_chunks_concatenated_are_the_whole_run(tiny_checkpoint, vqa_data, preloaded, tmp_path):
    question_file, folder = vqa_data
    whole = tmp_path / "whole.jsonl"
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, whole, "--batch-size", "2")) == 0
    chunks = []
    for index in range(2):
        path = tmp_path / f"2_{index}.jsonl"
        assert model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, path,
                                                 "--num-chunks", "2", "--chunk-idx", str(index))) == 0
        chunks.append(read_rows(path))
    assert [len(c) for c in chunks] == [3, 2]
    assert ids_and_texts(chunks[0] + chunks[1]) == ids_and_texts(read_rows(whole))


def test_beam_search_goes_through_generate(tiny_checkpoint, vqa_data, preloaded, tmp_path):
    question_file, folder = vqa_data
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    for answers, batch_size in ((one, "1"), (two, "2")):
        argv = driver_argv(tiny_checkpoint, question_file, folder, answers, "--num_beams", "2",
                           "--batch-size", batch_size)
        assert model_vqa_loader.main(argv) == 0
    assert ids_and_texts(read_rows(two)) == ids_and_texts(read_rows(one))
    record = json.loads(sidecar_path(two, RUN_RECORD_SUFFIX).read_text())
    assert record["generation"]["decoding"] == "model.generate"
    assert record["timing"]["prefill_latency_ms_median"] is None, "generate gives no phase timings"
    assert record["samples"]["measured"] == 5


def test_split_list_uses_ceil_sized_contiguous_chunks():
    assert split_list(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert split_list(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert [get_chunk(list(range(3)), 4, k) for k in range(4)] == [[0], [1], [2], []]
    assert split_list([], 3) == []


def test_pruned_run_record_reports_the_recipe(tiny_checkpoint, vqa_data, preloaded, tmp_path):
    question_file, folder = vqa_data
    answers = tmp_path / "pruned.jsonl"
    argv = driver_argv(tiny_checkpoint, question_file, folder, answers, "--reduction_ratio", "50", "--batch-size", "2",
                       "--benchmark", "toy", "--run-name", "tiny-r50")
    assert model_vqa_loader.main(argv) == 0

    recipe = RecipeBook.load(tiny_checkpoint / RECIPE_FILE_IN_CHECKPOINT).get(50.0)
    record = json.loads(sidecar_path(answers, RUN_RECORD_SUFFIX).read_text())
    assert record["visual_tokens"]["kept_per_layer_mean"] == list(TINY_KEEP_COUNTS)
    assert record["flops"]["paper_reduction_pct"] == pytest.approx(recipe.achieved_paper, abs=1e-9)
    assert record["pruning"]["keep_counts"] == list(recipe.keep_counts)
    assert record["pruning"]["reduction_ratio"] == 50.0
    assert (record["benchmark"], record["run_name"], record["driver"]) == ("toy", "tiny-r50", "model_vqa_loader")
    assert record["flops"]["full_prefill"] < record["flops"]["full_prefill_unpruned"]
    assert record["timing"]["prefill_latency_ms_median"] > 0
    assert record["memory"]["peak_bytes"] > 0
    for name in ("python", "torch", "transformers"):
        assert record["software"][name]
    log_lines = sidecar_path(answers, RUN_STATS_SUFFIX).read_text().splitlines()
    assert [next(iter(json.loads(line))) for line in log_lines] == ["header", "batch", "batch", "batch", "run"]


@pytest.mark.parametrize("ratio", [0, 50])
def test_greedy_loop_gives_the_tokens_of_generate(tiny, ratio):
    tokenizer, model, processor = tiny
    model.config.reduction_ratio = ratio
    prompts = [build_prompt(q) for q in QUESTIONS]
    images = sample_images(processor, model.config, len(prompts))
    ids, mask = encode_batch(tokenizer, prompts, "left")
    max_new = 10
    with torch.inference_mode():
        free_run = model.generate(ids, attention_mask=mask, images=images, do_sample=False, max_new_tokens=max_new)
    # end sample 0's answer early, so finished rows are exercised while others go on
    early_eos = int(free_run[0, ids.shape[1] + 2])
    original_eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = early_eos
    try:
        with torch.inference_mode():
            reference = model.generate(ids, attention_mask=mask, images=images, do_sample=False,
                                       max_new_tokens=max_new, use_cache=True)
        ours = greedy_generate(model, ids, mask, images, max_new)
    finally:
        model.generation_config.eos_token_id = original_eos
    expected = []
    for row in reference[:, ids.shape[1]:].tolist():
        expected.append(row[: row.index(early_eos) + 1] if early_eos in row else row)
    assert ours.new_tokens == expected
    assert len(ours.new_tokens[0]) <= 3 < max(len(t) for t in ours.new_tokens)
    assert ours.initial_visual == [model.get_model().num_visual_tokens()] * len(prompts)
    assert ours.prefill_s > 0 and ours.decode_s > 0
    assert ours.decode_tokens == sum(len(t) - 1 for t in ours.new_tokens)
    if ratio:
        assert ours.keep_counts[:, 0].tolist() == list(TINY_KEEP_COUNTS)
    else:
        assert ours.keep_counts is None


def test_collate_left_pads_and_stacks_only_present_images(tiny):
    tokenizer, model, processor = tiny
    item = EvalItem(1, "p", "q", None, 1)
    long_ids, short_ids = torch.arange(3, 9), torch.arange(3, 6)
    image = torch.zeros(3, 4, 4)
    batch = collate([PreparedSample(item, long_ids, None), PreparedSample(item, short_ids, image)], pad_token_id=0)
    assert batch.input_ids.tolist() == [list(range(3, 9)), [0, 0, 0, 3, 4, 5]]
    assert batch.attention_mask.tolist() == [[1] * 6, [0, 0, 0, 1, 1, 1]]
    assert batch.images.shape == (1, 3, 4, 4)


def test_answer_text_post_processing(tiny):
    tokenizer = tiny[0]

    def ids(text):
        return tokenizer(text, add_special_tokens=False).input_ids

    assert answer_text(tokenizer, ids(" yes") + [tokenizer.eos_token_id, 0, 0], "</s>") == "yes"
    assert answer_text(tokenizer, ids(" a ###"), "###") == "a", "stop string removed, then stripped"
    assert answer_text(tokenizer, ids(" Yes."), "</s>") == "Yes."


def test_missing_question_file_stops_before_loading(tiny_checkpoint, preloaded, tmp_path, capsys):
    missing = tmp_path / "nowhere.jsonl"
    code = model_vqa_loader.main(driver_argv(tiny_checkpoint, missing, tmp_path, tmp_path / "a.jsonl"))
    assert code == 2
    assert preloaded == []
    assert f"{missing}: question file does not exist" in capsys.readouterr().err


def test_missing_field_names_file_and_line(tiny_checkpoint, preloaded, tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question_id": 1, "image": "a.png", "text": "x"}\n{"question_id": 2, "image": "b.png"}\n')
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, questions, tmp_path, tmp_path / "a.jsonl")) == 2
    assert f"{questions}:2: field 'text' is missing" in capsys.readouterr().err
    assert preloaded == []


def test_model_vqa_preprocesses_without_padding(tiny_checkpoint, vqa_data, preloaded, tiny, tmp_path, monkeypatch):
    question_file, folder = vqa_data
    short = tmp_path / "two.jsonl"
    short.write_text("".join(question_file.read_text().splitlines(keepends=True)[:2]))
    seen = []
    real_collate = driver_loop.collate
    monkeypatch.setattr(driver_loop, "collate", lambda samples, pad: seen.append(samples) or real_collate(samples, pad))
    answers = tmp_path / "vqa.jsonl"
    assert model_vqa.main(driver_argv(tiny_checkpoint, short, folder, answers, "--batch-size", "2")) == 0

    processor = tiny[2]
    expected = processor.preprocess(Image.open(folder / "0.png"), return_tensors="pt")["pixel_values"][0]
    assert torch.equal(seen[0][0].image, expected)
    assert [r["question_id"] for r in read_rows(answers)] == ["img0", 10]
    args = build_parser(model_vqa.SPEC, "x").parse_args([])
    assert (args.max_new_tokens, args.conv_mode) == (1024, "llava_v1")


def test_science_driver_with_a_text_only_item(tiny_checkpoint, preloaded, tmp_path):
    folder = tmp_path / "images"
    (folder / "p1").mkdir(parents=True)
    Image.fromarray(np.full((20, 30, 3), 90, dtype=np.uint8)).save(folder / "p1" / "image.png")
    items = [
        {"id": "p1", "image": "p1/image.png",
         "conversations": [{"from": "human", "value": "<image>\nWhich shape?\nA. circle\nB. square"},
                           {"from": "gpt", "value": "A"}]},
        {"id": "p2", "conversations": [{"from": "human", "value": " Which is larger?\nA. 3\nB. 5 "},
                                       {"from": "gpt", "value": "B"}]},
    ]
    question_file = tmp_path / "sqa.json"
    question_file.write_text(json.dumps(items))
    answers = tmp_path / "sqa.jsonl"
    argv = driver_argv(tiny_checkpoint, question_file, folder, answers, "--single-pred-prompt", "--batch-size", "2")
    assert model_vqa_science.main(argv) == 0

    rows = read_rows(answers)
    suffix = "\nAnswer with the option's letter from the given choices directly."
    assert [r["question_id"] for r in rows] == ["p1", "p2"]
    assert rows[0]["prompt"] == "<image>\nWhich shape?\nA. circle\nB. square" + suffix
    assert rows[1]["prompt"] == "Which is larger?\nA. 3\nB. 5" + suffix
    batch = json.loads(sidecar_path(answers, RUN_STATS_SUFFIX).read_text().splitlines()[1])["batch"]
    assert batch["num_visual"] == [144, 0]
    assert batch["keep_counts"][1] == [0, 0, 0, 0]

    alone = tmp_path / "alone.jsonl"
    (tmp_path / "only_text.json").write_text(json.dumps(items[1:]))
    assert model_vqa_science.main(driver_argv(tiny_checkpoint, tmp_path / "only_text.json", folder, alone,
                                              "--single-pred-prompt")) == 0
    assert read_rows(alone)[0]["text"] == rows[1]["text"], "a text-only item answers as it does alone"


def _png_base64(seed):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(18, 26, 3), dtype=np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_mmbench_rounds_rotate_the_options():
    row = {"index": 7, "question": "Which?", "hint": float("nan"), "image": "x", "A": "red", "B": "blue",
           "C": "green", "D": float("nan")}
    items = model_vqa_mmbench.row_items(row, 2, all_rounds=True, single_pred_prompt="Letter only.")
    assert [i.extra["round_id"] for i in items] == [0, 1, 2]
    assert items[1].prompt == "Which?\nA. blue\nB. green\nC. red"
    assert items[1].question == items[1].prompt + "\nLetter only."
    assert items[1].extra["options"] == ["blue", "green", "red"]
    assert items[1].extra["option_char"] == ["B", "C", "A"]
    assert len({i.key for i in items}) == 3
    hinted = model_vqa_mmbench.row_items({**row, "hint": "Look.", "C": "None"}, 2, False, None)
    assert [i.prompt for i in hinted] == ["Look.\nWhich?\nA. red\nB. blue"]


def test_mmbench_driver_reads_the_tsv(tiny_checkpoint, preloaded, tmp_path):
    pd = pytest.importorskip("pandas")
    table = pd.DataFrame({
        "index": [11, 12], "question": ["Colour?", "Shape?"], "hint": [None, "A hint."],
        "A": ["red", "round"], "B": ["blue", "square"], "C": [None, None], "D": [None, None],
        "image": [_png_base64(0), _png_base64(1)], "category": ["c", "c"],
    })
    question_file = tmp_path / "mmbench.tsv"
    table.to_csv(question_file, sep="\t", index=False)
    answers = tmp_path / "mmb.jsonl"
    argv = driver_argv(tiny_checkpoint, question_file, tmp_path, answers, "--single-pred-prompt", "--all-rounds",
                       "--batch-size", "3")
    assert model_vqa_mmbench.main(argv) == 0
    rows = read_rows(answers)
    assert [(r["question_id"], r["round_id"]) for r in rows] == [(11, 0), (11, 1), (12, 0), (12, 1)]
    assert rows[3]["prompt"] == "A hint.\nShape?\nA. square\nB. round"
    assert rows[3]["option_char"] == ["B", "A"]
