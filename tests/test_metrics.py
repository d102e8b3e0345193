"""Benchmark metrics and converters on small hand-made inputs; expected values computed by hand."""
import builtins
import importlib.util
import json
import os
from pathlib import Path

import pytest

from llava.eval import eval_gqa, eval_mme, eval_pope, eval_science_qa, eval_textvqa
from llava.eval.eval_seed import question_type_names, seed_accuracy, seed_report_lines
from llava.eval.io_utils import JsonlError, read_answer_texts, read_jsonl, write_json_atomic, write_text_atomic
from llava.eval.m4c_evaluator import EvalAIAnswerProcessor, TextVQAAccuracyEvaluator
from tests.helpers import write_jsonl

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SHORT = "Answer the question using a single word or phrase."


def _script(name):
    """Imports scripts/<name>.py (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


# ---------------------------------------------------------------- io_utils


def test_read_jsonl_names_file_and_line_of_bad_json(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 1, "text": "a"}\n\n{"question_id": 2, "text": \n', encoding="utf-8")
    with pytest.raises(JsonlError, match=rf"{path}:3: invalid JSON"):
        read_jsonl(path)
    path.write_text('{"question_id": 1, "text": "a"}\n\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(JsonlError, match=rf"{path}:3: expected a JSON object, got list"):
        read_jsonl(path)
    path.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 2}\n', encoding="utf-8")
    with pytest.raises(JsonlError, match=rf"{path}:2: field 'text' is missing"):
        read_answer_texts(path)


def test_read_jsonl_skips_blank_lines_and_keeps_order(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 2, "text": "b"}\n\n{"question_id": 1, "text": "a"}\n', encoding="utf-8")
    assert read_jsonl(path) == [{"question_id": 2, "text": "b"}, {"question_id": 1, "text": "a"}]
    assert list(read_answer_texts(path).items()) == [(2, "b"), (1, "a")]
    with pytest.raises(FileNotFoundError, match="missing.jsonl: file does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_atomic_writes_replace_whole_file_and_leave_old_one_on_failure(tmp_path):
    path = tmp_path / "deep" / "out.json"
    write_json_atomic(path, {"a": [1, 2]}, indent=2)
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert os.listdir(path.parent) == ["out.json"], "no temporary file left behind"
    write_text_atomic(path, "x\n")
    assert path.read_text() == "x\n"


# ---------------------------------------------------------------- EvalAI normalisation


@pytest.mark.parametrize("raw, expected", [
    # articles dropped, number words mapped (before the article test), lower-cased
    ("The Two Dogs", "2 dogs"),
    ("an apple and a pear", "apple and pear"),
    ("none of ten eleven", "0 of 10 eleven"),
    # contractions from the table; "Im" is in the table only capitalised, so "im" stays
    ("dont know whats that", "don't know what's that"),
    ("Im here", "im here"),
    # "'s" split off; "?" and "," deleted in step 1
    ("the dog's bone?", "dog 's bone"),
    ("1,000", "1000"),
    # "-" touching no space becomes a space; with " -" somewhere every "-" is deleted
    ("e-mail", "e mail"),
    ("e-mail -", "email"),
    # "(" touches a space ("( ") so it is deleted; ")" touches none so it becomes a space
    ("( x)y", "x y"),
    # the test reads the string as it entered the step: ";" becoming a space makes " -", but "-"
    # still touched no space originally, so every "-" becomes a space ("ef" if it were deleted)
    ("ab;-cd e-f", "ab cd e f"),
    # tabs and newlines are spaces
    ("red\tand\nblue", "red and blue"),
    # periods removed unless a digit follows
    ("3.5 ft.", "3.5 ft"),
    ("mr.smith", "mrsmith"),
    # only the first 32 periods not before a digit are removed: 40 - 32 = 8 remain
    ("x" + "." * 40, "x" + "." * 8),
    ("." * 32 + "x", "x"),
])
def test_evalai_normalisation(raw, expected):
    assert EvalAIAnswerProcessor()(raw) == expected


def test_evalai_punctuation_digit_comma_digit_deletes_every_mark():
    # called on text that still has "1,0": every mark is deleted, none becomes a space
    process = EvalAIAnswerProcessor().process_punctuation
    assert process("1,000 a-b") == "1000 ab"
    # without digit,digit: "," and "-" touch no space, so both become spaces
    assert process("x,y a-b") == "x y a b"


# ---------------------------------------------------------------- TextVQA


GT = ["Cat", "cat", "the cat.", "dog", "dog", "bird", "fish", "cow", "cow", "cow"]


def test_textvqa_leave_one_out_scores():
    scores = TextVQAAccuracyEvaluator().answer_scores(GT)
    # a answer given k times: (k·min(1,(k-1)/3) + (10-k)·min(1,k/3)) / 10
    # cat, cow k=3: (3·2/3 + 7·1)/10 = 0.9; dog k=2: (2·1/3 + 8·2/3)/10 = 0.6; bird, fish k=1: (0 + 9/3)/10 = 0.3
    assert scores == pytest.approx({"cat": 0.9, "cow": 0.9, "dog": 0.6, "bird": 0.3, "fish": 0.3})
    # k=4: (4·1 + 6·1)/10 = 1
    assert TextVQAAccuracyEvaluator().answer_scores(["two"] * 4 + ["x"] * 6)["2"] == pytest.approx(1.0)


def test_textvqa_accuracy_and_ten_answers_required():
    evaluator = TextVQAAccuracyEvaluator()
    preds = [{"pred_answer": p, "gt_answers": GT} for p in ("CAT", "dog", "bird.", "dogs")]
    # 0.9 + 0.6 + 0.3 + 0 ("dogs" is no GT answer) = 1.8, over 4
    assert evaluator.eval_pred_list(preds) == pytest.approx(0.45)
    with pytest.raises(ValueError, match="expected 10 GT answers, got 9"):
        evaluator.eval_pred_list([{"pred_answer": "cat", "gt_answers": GT[:9]}])


def test_prompt_processor_forms():
    assert eval_textvqa.prompt_processor(f"What Is The Brand?\n{SHORT}") == "what is the brand?"
    assert eval_textvqa.prompt_processor(f"What Is X?\nReference OCR token: A, B\n{SHORT}") == "what is x?"
    assert eval_textvqa.prompt_processor(f"Reference OCR token: A\nWhat Is X?\n{SHORT}") == "what is x?"
    assert eval_textvqa.prompt_processor("OCR tokens: a b Question: What Is It? Short answer:") == "what is it?"
    with pytest.raises(ValueError, match=r"unrecognised TextVQA prompt \(1 lines\)"):
        eval_textvqa.prompt_processor("What is it?")
    with pytest.raises(ValueError, match=r"unrecognised TextVQA prompt \(3 lines\)"):
        eval_textvqa.prompt_processor("What is it?\nno reference\nthird")


def test_textvqa_eval_single_and_cli(tmp_path, capsys):
    annotation = _write_json(tmp_path / "TextVQA_0.5.1_val.json", {"data": [
        {"image_id": "img1", "question": "What Animal?", "answers": GT},
        {"image_id": "img2", "question": "What animal?", "answers": ["cow"] * 10},
    ]})
    result = write_jsonl(tmp_path / "answers" / "exp.jsonl", [
        {"question_id": "img1", "prompt": f"what animal?\nReference OCR token: x\n{SHORT}", "text": "Dog"},
        {"question_id": "img2", "prompt": f"What animal?\n{SHORT}", "text": "a cow"},
    ])
    # 0.6 (dog, k=2) and 1.0 (cow, k=10): mean 0.8
    samples, accuracy = eval_textvqa.eval_single(str(annotation), str(result))
    assert (samples, accuracy) == (2, pytest.approx(0.8))
    assert "exp\nSamples: 2; answered 2 of 2\nAccuracy: 80.00%\n" in capsys.readouterr().out

    (tmp_path / "answers" / "notes.txt").write_text("x")
    assert eval_textvqa.main(["--annotation-file", str(annotation), "--result-dir", str(tmp_path / "answers")]) == 0
    out = capsys.readouterr().out
    assert "Skipping notes.txt" in out and "Accuracy: 80.00%" in out

    write_jsonl(result, [{"question_id": "img3", "prompt": f"What animal?\n{SHORT}", "text": "cow"}])
    assert eval_textvqa.main(["--annotation-file", str(annotation), "--result-file", str(result)]) == 2
    assert "no annotation for (image_id, question) ('img3', 'what animal?')" in capsys.readouterr().err


# ---------------------------------------------------------------- POPE


@pytest.mark.parametrize("text, expected", [
    ("I do not think so.", "no"),
    ("There is no dog.", "no"),
    ("No.", "no"),
    ("Yes, definitely not.", "no"),          # "not" in the first sentence
    ("Yes. No doubt.", "yes"),                # only the first sentence counts
    ("Nope, no.", "no"),                      # comma deleted: words "Nope", "no"
    ("Nothing here.", "yes"),                 # whole words only
    ("Not sure", "yes"),                      # "Not" is not in the list
    ("no\nmaybe", "yes"),                     # split on single spaces only
])
def test_pope_answer_parsing(text, expected):
    assert eval_pope.parse_pope_answer(text) == expected


def _pope_files(tmp_path):
    categories = {
        # labels, answers -> parsed predictions
        "adversarial": (["yes", "no", "yes", "no"],
                        ["Yes, there is a dog.", "No, there is not.", "There is not a cat.", "Yes"]),  # y n n y
        "popular": (["yes", "yes", "no"], ["yes", "Yes. No doubt.", "Nope, no."]),                    # y y n
        "random": (["no", "yes"], ["Not sure", "no\nmaybe"]),                                         # y y
    }
    questions, answers = [], []
    for category, (labels, texts) in categories.items():
        write_jsonl(tmp_path / "coco" / f"coco_pope_{category}.json", [{"label": label} for label in labels])
        for i, text in enumerate(texts):
            qid = f"{category[0]}{i}"
            questions.append({"question_id": qid, "category": category, "text": "Is there ...?", "image": "x.jpg"})
            answers.append({"question_id": qid, "text": text, "order": (i, len(answers))})
    # interleave the categories in the answer file (a0 p0 r0 a1 ...); order within a category is kept
    answers.sort(key=lambda answer: answer.pop("order"))
    return (tmp_path / "coco", write_jsonl(tmp_path / "questions.jsonl", questions),
            write_jsonl(tmp_path / "answers.jsonl", answers))


def test_pope_counts_f1_and_mean_f1(tmp_path, capsys):
    annotation_dir, question_file, result_file = _pope_files(tmp_path)
    results = eval_pope.eval_pope_files(str(annotation_dir), str(question_file), str(result_file))
    assert list(results) == ["adversarial", "popular", "random"]
    # adversarial: preds y n n y vs labels y n y n -> TP 1, TN 1, FN 1, FP 1; P = R = F1 = acc = 0.5
    assert results["adversarial"] == pytest.approx({"TP": 1, "FP": 1, "TN": 1, "FN": 1, "accuracy": 0.5,
                                                    "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5})
    # popular: y y n vs y y n -> TP 2, TN 1; all 1, yes ratio 2/3
    assert results["popular"] == pytest.approx({"TP": 2, "FP": 0, "TN": 1, "FN": 0, "accuracy": 1.0,
                                                "precision": 1.0, "recall": 1.0, "f1": 1.0, "yes_ratio": 2 / 3})
    # random: y y vs n y -> TP 1, FP 1; P 0.5, R 1, F1 = 2·0.5·1/1.5 = 2/3
    assert results["random"] == pytest.approx({"TP": 1, "FP": 1, "TN": 0, "FN": 0, "accuracy": 0.5,
                                               "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "yes_ratio": 1.0})
    out = capsys.readouterr().out
    assert "Category: adversarial, # samples: 4\nTP\tFP\tTN\tFN\t\n1\t1\t1\t1\n" in out
    assert "0.667, 0.500, 0.500, 1.000, 1.000" in out
    # (0.5 + 1 + 2/3) / 3 = 13/18 = 0.7222
    assert "Mean F1 over 3 categories (adversarial, popular, random): 0.722 (72.2)" in out


def test_pope_rejects_stray_files_and_length_mismatch(tmp_path, capsys):
    annotation_dir, question_file, result_file = _pope_files(tmp_path)
    argv = ["--annotation-dir", str(annotation_dir), "--question-file", str(question_file),
            "--result-file", str(result_file)]
    write_jsonl(annotation_dir / "coco_pope_random.json", [{"label": "no"}])
    assert eval_pope.main(argv) == 2
    assert "coco_pope_random.json: 1 labels but 2 questions of category 'random' in " in capsys.readouterr().err
    (annotation_dir / "README.md").write_text("x")
    assert eval_pope.main(argv) == 2
    assert "README.md: the annotation folder must hold only coco_pope_<category>.json files" in capsys.readouterr().err


# ---------------------------------------------------------------- ScienceQA


@pytest.mark.parametrize("text, expected", [
    ("B", "B"),
    ("A. The moon", "A"),
    ("The answer is C.", "C"),
    ("Because ... The answer is D, clearly", "D"),
    ("The answer is C", "FAILED"),                   # the pattern needs one character after the letter
    ("The answer is A. The answer is B.", "FAILED"), # two matches
    ("b", "FAILED"),
    ("F", "FAILED"),
    ("A.", "FAILED"),                                # shorter than 3 characters
])
def test_science_qa_answer_parsing(text, expected):
    assert eval_science_qa.parse_answer_letter(text, ["A", "B", "C", "D", "E"]) == expected


def test_get_pred_idx_limits_to_the_choices():
    options = ["A", "B", "C", "D", "E"]
    assert eval_science_qa.get_pred_idx("B", ["x", "y"], options) == 1
    assert eval_science_qa.get_pred_idx("C", ["x", "y"], options) == -1
    assert eval_science_qa.get_pred_idx("FAILED", ["x", "y"], options) == -1


def test_science_qa_img_accuracy_and_outputs(tmp_path, capsys):
    problems = {pid: {"choices": ["p", "q", "r"], "answer": answer}
                for pid, answer in [("1", 0), ("2", 1), ("3", 2), ("4", 0), ("5", 1), ("9", 0)]}
    _write_json(tmp_path / "sqa" / "problems.json", problems)
    _write_json(tmp_path / "sqa" / "pid_splits.json", {"test": ["1", "2", "3", "4", "5"], "val": ["9"]})
    result = write_jsonl(tmp_path / "answers.jsonl", [
        {"question_id": "1", "prompt": "<image>\nQ1", "text": "A"},                   # image, right
        {"question_id": "2", "prompt": "<image>\nQ2", "text": "C. r"},                # image, wrong
        {"question_id": "3", "prompt": "Q3", "text": "The answer is C."},             # no image, right
        # "4" has no answer: FAILED, not multimodal
        {"question_id": "5", "prompt": "Context <image>\nQ5", "text": "B"},          # image, right
    ])
    output_file, output_result = tmp_path / "out" / "output.json", tmp_path / "out" / "result.json"
    assert eval_science_qa.main(["--base-dir", str(tmp_path / "sqa"), "--result-file", str(result),
                                 "--output-file", str(output_file), "--output-result", str(output_result)]) == 0
    # 3 right of 5 = 60%; image subset {1, 2, 5}: 2 of 3 = 66.67%
    assert capsys.readouterr().out == "Total: 5, Correct: 3, Accuracy: 60.00%, IMG-Accuracy: 66.67%\n"
    summary = json.loads(output_result.read_text())
    assert summary == {"acc": 60.0, "correct": 3, "count": 5,
                       "results": {"1": 0, "2": 2, "3": 2, "4": -1, "5": 1},
                       "outputs": {"1": "A", "2": "C. r", "3": "The answer is C.", "4": "FAILED", "5": "B"}}
    analysis = json.loads(output_file.read_text())
    assert [e["question_id"] for e in analysis["correct"]] == ["1", "3", "5"]
    missing = analysis["incorrect"][1]
    assert missing == {"question_id": "4", "parsed_ans": "FAILED", "ground_truth": "A", "question": "Unknown",
                       "pred": "FAILED", "is_multimodal": False}
    # upstream's "--options ABC" (argparse type=list) and "--options A B C" give the same letters
    parser = eval_science_qa.build_parser()
    for flag in (["ABC"], ["A", "B", "C"]):
        args = parser.parse_args(["--base-dir", "d", "--result-file", "r", "--output-file", "o",
                                  "--output-result", "s", "--options", *flag])
        assert eval_science_qa._options(args.options) == ["A", "B", "C"]


# ---------------------------------------------------------------- GQA


GQA_QUESTIONS = {
    "q1": {"answer": "yes", "isBalanced": True, "types": {"structural": "verify"}},
    "q2": {"answer": "no", "isBalanced": True, "types": {"structural": "logical"}},
    "q3": {"answer": "red", "isBalanced": True, "types": {"structural": "query"}},
    "q4": {"answer": "table", "isBalanced": True, "types": {"structural": "query"}},
    "q5": {"answer": "cat", "isBalanced": True, "types": {"structural": "query"}},
    "q6": {"answer": "dog", "isBalanced": False, "types": {"structural": "query"}},
    "q7": {"answer": "yes", "isBalanced": False, "types": {"structural": "verify"}},
}


def test_gqa_accuracy_balanced_only_with_binary_and_open():
    predictions = {"q1": "yes", "q2": "yes", "q3": "red", "q4": "desk", "q5": "cat", "q7": "no"}
    score = eval_gqa.gqa_accuracy(GQA_QUESTIONS, predictions)
    # balanced q1..q5: right q1, q3, q5 -> 3/5; binary q1, q2 -> 1/2; open q3, q4, q5 -> 2/3; q6, q7 ignored
    assert (score.correct, score.total) == (3, 5)
    assert (score.accuracy, score.binary, score.open) == (pytest.approx(0.6), pytest.approx(0.5), pytest.approx(2 / 3))
    with pytest.raises(ValueError, match=r"no prediction for balanced question q2 \(2 missing\)"):
        eval_gqa.gqa_accuracy(GQA_QUESTIONS, {"q1": "yes", "q3": "red", "q5": "cat"})


def test_gqa_converter_then_evaluator_from_the_data_folder(tmp_path, monkeypatch, capsys):
    answers = write_jsonl(tmp_path / "merge.jsonl", [
        {"question_id": qid, "text": text}
        for qid, text in [("q1", "Yes."), ("q2", "Yes"), ("q3", "Red."), ("q4", "desk"), ("q5", "CAT"), ("q6", "x")]
    ])
    data = tmp_path / "gqa" / "data"
    _write_json(data / "testdev_balanced_questions.json", GQA_QUESTIONS)
    convert = _script("convert_gqa_for_eval")
    assert convert.main(["--src", str(answers), "--dst", str(data / "testdev_balanced_predictions.json")]) == 0
    predictions = json.loads((data / "testdev_balanced_predictions.json").read_text())
    assert predictions[:3] == [{"questionId": "q1", "prediction": "yes"}, {"questionId": "q2", "prediction": "yes"},
                               {"questionId": "q3", "prediction": "red"}]
    capsys.readouterr()
    monkeypatch.chdir(data)
    assert eval_gqa.main(["--tier", "testdev_balanced"]) == 0
    assert capsys.readouterr().out == ("Balanced questions: 5 (2 binary, 3 open)\n"
                                       "Binary: 50.00%\nOpen: 66.67%\nAccuracy: 60.00%\n")


# ---------------------------------------------------------------- MME


def _mme_tree(tmp_path):
    mme = tmp_path / "MME"
    bench = mme / "MME_Benchmark_release_version"
    qa = bench / "existence" / "questions_answers_YN"
    (bench / "existence" / "images").mkdir(parents=True)
    qa.mkdir(parents=True)
    (qa / "img1.txt").write_text("Is there a dog in this image? Please answer yes or no.\tYes\n"
                                 "Is there a cat in this image? Please answer yes or no.\tNo\n")
    # the second question is spelled with two spaces before "Please" in the ground truth
    (qa / "img2.txt").write_text("Is there a car in this image? Please answer yes or no.\tYes\n"
                                 "Is there a bus in this image?  Please answer yes or no.\tNo\n")
    (bench / "code_reasoning").mkdir()
    (bench / "code_reasoning" / "code1.txt").write_text("Will this print 3? Please answer yes or no.\tno\n"
                                                        "Will this print 4? Please answer yes or no.\tyes\n")
    answers = [
        ("existence/img1.jpg", "Is there a dog in this image?", "Yes"),         # right
        ("existence/img1.jpg", "Is there a cat in this image?", "No"),          # right
        ("existence/img2.jpg", "Is there a car in this image?", "yes, a red one"),  # "yes," -> yes, right
        ("existence/img2.jpg", "Is there a bus in this image?", "There is no bus"),  # "ther" -> other, wrong
        ("code_reasoning/code1.png", "Will this print 3?", "No"),               # right
        ("code_reasoning/code1.png", "Will this print 4?", "No"),               # wrong
    ]
    write_jsonl(mme / "answers" / "exp.jsonl", [
        {"question_id": qid, "prompt": f"{question}\n{SHORT}", "text": text} for qid, question, text in answers
    ])
    return mme


def test_mme_convert_then_calculate(tmp_path, capsys):
    mme = _mme_tree(tmp_path)
    assert eval_mme.main(["convert", "--experiment", "exp", "--mme-dir", str(mme)]) == 0
    results = mme / "eval_tool" / "answers" / "exp"
    assert (results / "existence.txt").read_text().splitlines() == [
        "img1.txt\tIs there a dog in this image? Please answer yes or no.\tYes\tYes",
        "img1.txt\tIs there a cat in this image? Please answer yes or no.\tNo\tNo",
        "img2.txt\tIs there a car in this image? Please answer yes or no.\tYes\tyes, a red one",
        "img2.txt\tIs there a bus in this image?  Please answer yes or no.\tNo\tThere is no bus",
    ]
    report = eval_mme.calculate(str(results))
    # existence: 3 of 4 right (acc 0.75), 1 of 2 images fully right (acc+ 0.5): 75 + 50 = 125
    existence = report.tasks["existence"]
    assert (existence.acc, existence.acc_plus, existence.score) == (0.75, 0.5, 125.0)
    # code_reasoning: 1 of 2 (0.5), no image fully right: 50
    assert report.tasks["code_reasoning"].score == 50.0
    assert report.totals == {"Perception": 125.0, "Cognition": 50.0}
    assert len(report.missing) == 12 and "count" in report.missing
    capsys.readouterr()
    assert eval_mme.main(["calculate", "--results_dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "=========== Perception ===========\ntotal score: 125.0 \n" in out
    assert "\t existence  score: 125.0" in out and "\t code_reasoning  score: 50.0" in out


@pytest.mark.parametrize("text, expected", [
    ("yes", "yes"), ("no", "no"), ("yes, it is", "yes"), ("nope", "no"), (" no,", "no"),
    ("there is", "other"), ("not yes", "no"), ("", "other"),
])
def test_mme_prediction_parsing(text, expected):
    # "not yes"[:4] = "not " holds "no" but not "yes"
    assert eval_mme.parse_mme_prediction(text) == expected


def test_mme_errors_name_the_problem(tmp_path):
    mme = _mme_tree(tmp_path)
    write_jsonl(mme / "answers" / "bad.jsonl",
                [{"question_id": "existence/img1.jpg", "prompt": "Is it?", "text": "y"}])
    # neither spelling of the suffix is in the ground truth; the message shows the last one tried
    with pytest.raises(ValueError, match=r"answer 1: \(existence, img1.txt, 'Is it\?  Please answer yes or no.'\) "
                                         "is not in the MME ground truth"):
        eval_mme.convert_experiment(str(mme), "bad")
    with pytest.raises(ValueError, match=r"t.txt:1-2: the pair is about a.txt and b.txt"):
        eval_mme.score_task_lines(["a.txt\tq\tyes\tyes", "b.txt\tq\tno\tno"], "t.txt")
    with pytest.raises(ValueError, match="3 lines; expected a positive even number"):
        eval_mme.score_task_lines(["a.txt\tq\tyes\tyes"] * 3, "t.txt")


# ---------------------------------------------------------------- SEED


SEED_ANNOTATION = {
    "question_type": {"Scene Understanding": 1, "Instance Identity": 2, "Action Recognition": 3},
    "questions": [
        {"question_id": "101", "question_type_id": 1, "data_type": "image", "answer": "A"},
        {"question_id": "102", "question_type_id": 1, "data_type": "image", "answer": "B"},
        {"question_id": "103", "question_type_id": 2, "data_type": "image", "answer": "C"},
        {"question_id": "201", "question_type_id": 3, "data_type": "video", "answer": "D"},
        {"question_id": "202", "question_type_id": 3, "data_type": "video", "answer": "A"},
    ],
}
# answer ids are ints in the answer file; "B." is not "B"; 202 has no answer
SEED_ANSWERS = [{"question_id": 101, "text": "A"}, {"question_id": 102, "text": "B."},
                {"question_id": 103, "text": "C"}, {"question_id": 201, "text": "D"}]


def test_seed_accuracy_per_type_and_subsets():
    predictions = {str(a["question_id"]): a["text"] for a in SEED_ANSWERS}
    questions = SEED_ANNOTATION["questions"]
    score = seed_accuracy(questions, predictions)
    # type 1: 101 right, 102 wrong; type 2: 103 right; type 3: 201 right, 202 missing
    assert score.per_type == {1: (1, 2), 2: (1, 1), 3: (1, 2)}
    assert score.accuracy == pytest.approx(3 / 5)
    assert seed_accuracy(questions, predictions, "image").accuracy == pytest.approx(2 / 3)
    assert seed_accuracy(questions, predictions, "video").accuracy == pytest.approx(1 / 2)
    assert seed_report_lines(score, question_type_names(SEED_ANNOTATION)) == [
        "Scene Understanding: 50.00%", "Instance Identity: 100.00%", "Action Recognition: 50.00%",
        "Total accuracy: 60.00%",
    ]


def test_seed_converter_prints_and_needs_every_answer_for_upload(tmp_path, capsys):
    annotation = _write_json(tmp_path / "SEED-Bench.json", SEED_ANNOTATION)
    result = write_jsonl(tmp_path / "merge.jsonl", SEED_ANSWERS)
    upload = tmp_path / "upload" / "exp.jsonl"
    convert = _script("convert_seed_for_submission")
    argv = ["--annotation-file", str(annotation), "--result-file", str(result), "--result-upload-file", str(upload)]
    assert convert.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "Scene Understanding: 50.00%", "Instance Identity: 100.00%", "Action Recognition: 50.00%",
        "Total accuracy: 60.00%", "image accuracy: 66.67%", "video accuracy: 50.00%",
    ]
    assert "1 of 5 questions have no answer (first: '202')" in captured.err
    assert not upload.exists()
    write_jsonl(result, SEED_ANSWERS + [{"question_id": 202, "text": "B"}])
    assert convert.main(argv) == 0
    assert read_jsonl(upload) == [{"question_id": qid, "prediction": text} for qid, text in
                                  [("101", "A"), ("102", "B."), ("103", "C"), ("201", "D"), ("202", "B")]]


# ---------------------------------------------------------------- converters


def test_vqav2_converter_normalises_and_fills_missing_with_empty(tmp_path, capsys):
    root = tmp_path / "vqav2"
    write_jsonl(root / "llava_vqav2_mscoco_test2015.jsonl",
                [{"question_id": qid, "image": "x.jpg", "text": "?"} for qid in (3, 1, 2)])
    write_jsonl(root / "answers" / "split" / "ckpt" / "merge.jsonl",
                [{"question_id": 1, "text": "Two dogs."}, {"question_id": 3, "text": "Yes"}])
    convert = _script("convert_vqav2_for_submission")
    assert convert.main(["--dir", str(root), "--split", "split", "--ckpt", "ckpt"]) == 0
    uploaded = json.loads((root / "answers_upload" / "split" / "ckpt.json").read_text())
    # test-list order; "Two dogs." -> "2 dogs"; question 2 unanswered -> ""
    assert uploaded == [{"question_id": 3, "answer": "yes"}, {"question_id": 1, "answer": "2 dogs"},
                        {"question_id": 2, "answer": ""}]
    assert "total results: 2, total split: 3, unanswered (empty answer): 1" in capsys.readouterr().out


def test_vizwiz_converter_requires_every_answer(tmp_path, capsys):
    test_file = write_jsonl(tmp_path / "llava_test.jsonl", [
        {"question_id": "a", "image": "VizWiz_test_1.jpg", "text": "?"},
        {"question_id": "b", "image": "VizWiz_test_2.jpg", "text": "?"},
    ])
    result = write_jsonl(tmp_path / "answers.jsonl", [{"question_id": "a", "text": "The Red Can."}])
    upload = tmp_path / "upload" / "exp.json"
    convert = _script("convert_vizwiz_for_submission")
    argv = ["--annotation-file", str(test_file), "--result-file", str(result), "--result-upload-file", str(upload)]
    assert convert.main(argv) == 2
    assert "1 of 2 questions in" in capsys.readouterr().err
    assert not upload.exists()
    write_jsonl(result, [{"question_id": "b", "text": "unanswerable"}, {"question_id": "a", "text": "The Red Can."}])
    assert convert.main(argv) == 0
    assert json.loads(upload.read_text()) == [{"image": "VizWiz_test_1.jpg", "answer": "red can"},
                                              {"image": "VizWiz_test_2.jpg", "answer": "unanswerable"}]


def test_mmvet_converter_keys(tmp_path):
    src = write_jsonl(tmp_path / "answers.jsonl",
                      [{"question_id": 0, "text": "A cat."}, {"question_id": 12, "text": "3"}])
    dst = tmp_path / "results" / "exp.json"
    assert _script("convert_mmvet_for_eval").main(["--src", str(src), "--dst", str(dst)]) == 0
    assert json.loads(dst.read_text()) == {"v1_0": "A cat.", "v1_12": "3"}


def test_mmbench_converter_missing_dependency_message(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name in ("pandas", "openpyxl"):
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    convert = _script("convert_mmbench_for_submission")
    monkeypatch.setattr(builtins, "__import__", no_pandas)
    argv = ["--annotation-file", "x.tsv", "--result-dir", str(tmp_path), "--upload-dir", str(tmp_path),
            "--experiment", "exp"]
    assert convert.main(argv) == 2
    assert capsys.readouterr().err == (
        "convert_mmbench_for_submission: error: pandas is missing; pip install pandas openpyxl\n")


def test_mmbench_converter_round_trip(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("openpyxl")
    columns = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
               "l2-category", "comment", "split"]
    rows = [[i, f"q{i}", "h", "a", "b", "c", "d", "A", "cat", "b64", "src", "l2", "-", "dev"] for i in (10, 11, 12)]
    tsv = tmp_path / "mmbench.tsv"
    pd.DataFrame(rows, columns=columns).to_csv(tsv, sep="\t", index=False)
    write_jsonl(tmp_path / "answers" / "exp.jsonl",
                [{"question_id": 12, "text": "C"}, {"question_id": 10, "text": "A"}])
    convert = _script("convert_mmbench_for_submission")
    assert convert.main(["--annotation-file", str(tsv), "--result-dir", str(tmp_path / "answers"),
                         "--upload-dir", str(tmp_path / "upload"), "--experiment", "exp"]) == 0
    sheet = pd.read_excel(tmp_path / "upload" / "exp.xlsx", engine="openpyxl")
    # dropped columns gone, prediction at position 6, row 11 unanswered
    assert list(sheet.columns) == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert sheet["prediction"].tolist()[::2] == ["A", "C"] and pd.isna(sheet["prediction"][1])
