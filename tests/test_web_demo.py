"""The web demo (`python -m llava.serve.gradio_web_server`): its request handler on the tiny model
(bad input ends in a message, the pruner is cleared after a failed or abandoned request, answers
and kept counts equal run_llava's), and the page itself in headless Chromium on the demo model."""
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.cli_support import image_prompt
from llava.eval.run_llava import main as run_llava_main
from llava.mm_utils import tokenizer_image_token
from llava.model.multimodal_encoder.visionzip import token_split
from llava.model.pruning.policies import METHOD_LABELS, POLICIES
from llava.model.pruning.recipe import RecipeBook
from llava.serve.demo_limits import BUSY_MESSAGE, ImageSlots
from llava.serve.demo_requests import (
    DemoModel,
    DemoRequest,
    RequestError,
    parse_ratios,
    run_request,
)
from llava.serve.demo_results import BudgetDone, BudgetFailed, PartialAnswer, RequestDone, RequestFailed
from llava.serve.kept_patches import MERGED
from llava.serve.timed_generation import GenerationTiming

from tests.helpers import TINY_KEEP_COUNTS, TINY_RECIPE_RATIO

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "playground" / "models" / "llava-v1.5-shapes"
SHAPES_IMAGE = REPO / "playground" / "shapes" / "images" / "test_0000.png"
SHAPES_QUESTION = "What color is the triangle?\nAnswer the question using a single word or phrase."
QUESTION = "What colour is the square?"
MAX_NEW = 12


@pytest.fixture()
def demo(tiny, tiny_checkpoint):
    tokenizer, model, processor = tiny
    return DemoModel(tokenizer, model, processor, "llava-v1.5-tiny")


@pytest.fixture()
def image(tmp_path) -> Path:
    path = tmp_path / "square.png"
    Image.new("RGB", (48, 48), (200, 30, 30)).save(path)
    return path


def _request(image_path, question=QUESTION, ratios=(0.0,), **kwargs) -> DemoRequest:
    return DemoRequest(str(image_path) if image_path else None, question, "llava_v1", tuple(ratios),
                       max_new_tokens=MAX_NEW, **kwargs)


def _is_unpruned(model) -> bool:
    return model.config.reduction_ratio == 0 and model.get_model().prefill_hook is None


def _run_llava(model_path, image_path, question, ratio, capsys, max_new=MAX_NEW):
    """run_llava's greedy answer and its 'visual tokens kept after the last layer' count (None unpruned)."""
    answer = run_llava_main(["--model-path", str(model_path), "--image-file", str(image_path), "--query", question,
                             "--temperature", "0", "--max-new-tokens", str(max_new), "--device", "cpu",
                             "--reduction-ratio", str(ratio)])
    kept = re.search(r"visual tokens kept after the last layer: (\d+) of", capsys.readouterr().err)
    return answer, int(kept.group(1)) if kept else None


# --- ratios and timing -----------------------------------------------------------------------

def test_ratios_are_the_ticked_then_the_typed_ones_each_once():
    assert parse_ratios(["0", "50"], "45, 0.5  70") == (0.0, 50.0, 45.0, 70.0)


@pytest.mark.parametrize("checked, other, message", [
    ([], "", "Reduction ratios: pick at least one (0 is the unpruned model)."),
    (["0", "30", "50"], "60 70", "Reduction ratios: pick at most 4, got 5."),
    (["0"], "lots", "Reduction ratios: reduction ratio 'lots' is not a number"),
    (["0"], "100", "Reduction ratios: reduction ratio '100' is out of range"),
])
def test_bad_ratios_are_one_message(checked, other, message):
    with pytest.raises(RequestError) as caught:
        parse_ratios(checked, other)
    assert str(caught.value).startswith(message)


def test_timing_is_read_from_the_token_arrivals():
    timing = GenerationTiming.from_arrivals(1.0, [1.0, 1.5, 1.7, 1.9])  # the prompt, then 3 tokens
    assert (timing.prefill_s, round(timing.decode_s, 9), timing.decode_tokens) == (0.5, 0.4, 2)
    assert round(timing.decode_tokens_per_s, 9) == 5.0
    assert GenerationTiming.from_arrivals(1.0, [1.0]).decode_tokens_per_s is None


# --- the request handler on the tiny model -----------------------------------------------------

def test_answers_and_kept_counts_equal_run_llava(demo, image, tiny_checkpoint, capsys):
    events = list(run_request(demo, _request(image, ratios=(0.0, TINY_RECIPE_RATIO))))
    done = [e.result for e in events if isinstance(e, BudgetDone)]
    assert [r.ratio for r in done] == [0.0, TINY_RECIPE_RATIO]
    unpruned, pruned = done
    assert (unpruned.answer, None) == _run_llava(tiny_checkpoint, image, QUESTION, 0, capsys)
    assert (pruned.answer, TINY_KEEP_COUNTS[-1]) == _run_llava(tiny_checkpoint, image, QUESTION, 50, capsys)
    assert unpruned.keep_counts == [144] * 4
    assert pruned.keep_counts == list(TINY_KEEP_COUNTS)
    assert pruned.masks.shape == (4, 12, 12) and pruned.masks.sum(axis=(1, 2)).tolist() == list(TINY_KEEP_COUNTS)
    assert pruned.summary_lines()[0] == "Visual tokens kept after each layer: 144, 97, 61, 30 (of 144)"
    assert round(pruned.flops["paper_reduction_pct"], 2) == round(RecipeBook.load(
        tiny_checkpoint / "fitprune_recipes.json").get(TINY_RECIPE_RATIO).achieved_paper, 2)
    assert unpruned.flops["paper_reduction_pct"] == 0.0 and unpruned.flops["full_prefill_reduction_pct"] == 0.0
    assert [e.text for e in events if isinstance(e, PartialAnswer)][-1].strip() != ""
    assert events[-1] == RequestDone(events[-1].message) and events[-1].message.startswith("Answered at 2 of 2 ")
    assert _is_unpruned(demo.model)


def test_an_anyres_model_answers_with_keep_counts_and_flops_but_no_patches(tmp_path, capsys):
    from fitprune.lab.tiny_checkpoint import TinyLlavaSpec, write_tiny_llava
    from llava.model.builder import load_pretrained_model

    path = write_tiny_llava(tmp_path / "llava-v1.6-tiny", TinyLlavaSpec(version="v1.6"))
    tokenizer, model, processor, _ = load_pretrained_model(str(path), None, "llava-v1.6-tiny", device="cpu")
    image = tmp_path / "wide.png"
    Image.new("RGB", (90, 40), (20, 120, 200)).save(image)
    demo = DemoModel(tokenizer, model, processor, "llava-v1.6-tiny")
    events = list(run_request(demo, _request(image)))
    result = events[-2].result
    assert (result.answer, None) == _run_llava(path, image, QUESTION, 0, capsys)
    prepared = demo.prepare(_request(image))
    with torch.inference_mode():  # the prefill's rows: the prompt's tokens with the image's in place of one
        rows = model(prepared.input_ids, **prepared.image_inputs).logits.shape[1]
    visual = rows - (prepared.input_ids.shape[1] - 1)
    assert visual > model.get_model().get_vision_tower().num_patches  # more than the base image alone: tiles too
    assert (result.num_visual, result.keep_counts) == (visual, [visual] * model.config.num_hidden_layers)
    assert result.flops["paper_reduction_pct"] == 0.0 and result.flops["full_prefill_unpruned"] > 0
    assert (result.masks, events[0].view) == (None, None)
    assert [line.split(":")[0] for line in result.summary_lines()] == [
        "Visual tokens kept after each layer", "FLOPs removed", "Prefill latency"]


def _text_file(tmp_path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("just text")
    return path


def _empty_file(tmp_path) -> Path:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    return path


def _huge(tmp_path) -> Path:
    """An image above the 150,000-byte limit the test sets (3 bytes per RGB pixel)."""
    path = tmp_path / "huge.png"
    Image.new("RGB", (300, 200)).save(path)
    return path


def _shapes(tmp_path) -> Path:
    return SHAPES_IMAGE


@pytest.mark.parametrize("case, make_image, question, message", [
    ("no image", lambda tmp: None, QUESTION, "Image: none given; upload one or pick an example."),
    ("not an image", _text_file, QUESTION, "Image: notes.png: not an image file (PIL cannot identify its format)"),
    ("empty file", _empty_file, QUESTION, "Image: empty.png: image file is empty (0 bytes)"),
    ("huge image", _huge, QUESTION, "Image: huge.png: 300x200 pixels of mode RGB take 180000 bytes decoded, above "
                                    "the limit of 150000 bytes (decompression-bomb guard)"),
    ("empty question", _shapes, "   ", "Question: empty; type a question about the image."),
    ("unencodable question", _shapes, "What \ud800?", "Question: character 5 (U+D800) cannot be encoded"),
    ("question past the context", _shapes, "square " * 200, "Question: too long: prompt is "),
])
def test_bad_input_ends_the_request_with_one_message(demo, tmp_path, monkeypatch, case, make_image, question,
                                                     message):
    monkeypatch.setattr(demo, "max_bytes", 150_000)
    monkeypatch.setattr(demo.model.config, "max_position_embeddings", 300)
    events = list(run_request(demo, _request(make_image(tmp_path), question)))
    assert len(events) == 1 and isinstance(events[0], RequestFailed), events
    assert events[0].message.startswith(message), events[0].message
    assert str(tmp_path) not in events[0].message  # the upload's temporary folder stays out of the page


def test_a_ratio_without_recipe_shows_the_calibrate_command_and_the_others_run(demo, image, tiny_checkpoint):
    events = list(run_request(demo, _request(image, ratios=(30.0, 0.0))))
    failed = [e for e in events if isinstance(e, BudgetFailed)]
    assert [(e.slot, e.command) for e in failed] == [
        (0, f"python -m fitprune.calibrate --model-path {tiny_checkpoint} --reduction-ratio 30")]
    assert "no recipe for reduction ratio 30% for model 'llava-v1.5-tiny' (available: 50)" in failed[0].message
    assert [e.result.ratio for e in events if isinstance(e, BudgetDone)] == [0.0]
    assert events[-1].message.startswith("Answered at 1 of 2 budgets")
    assert _is_unpruned(demo.model)


def test_the_pruner_is_cleared_after_a_request_that_raised(demo, image, monkeypatch):
    seen = []

    def failing_generate(*args, **kwargs):
        seen.append((demo.model.config.reduction_ratio, demo.model.get_model().prefill_hook is not None))
        raise RuntimeError("boom")

    monkeypatch.setattr(demo.model, "generate", failing_generate)
    events = list(run_request(demo, _request(image, ratios=(TINY_RECIPE_RATIO,))))
    assert seen == [(TINY_RECIPE_RATIO, True)]  # it was pruning when it raised
    assert isinstance(events[-1], RequestFailed)
    assert events[-1].message.startswith("Internal error at ratio 50% (RuntimeError: boom)")
    assert _is_unpruned(demo.model)


def _record_answer_lengths(demo, monkeypatch) -> list:
    """The list each `generate` of the demo's model appends its count of new tokens to."""
    lengths = []
    generate = demo.model.generate

    def recording_generate(input_ids, **kwargs):
        output = generate(input_ids, **kwargs)
        lengths.append(output.shape[1] - input_ids.shape[1])
        return output

    monkeypatch.setattr(demo.model, "generate", recording_generate)
    return lengths


def test_a_client_that_leaves_mid_answer_stops_the_generation_and_leaves_the_model_unpruned(demo, image,
                                                                                           monkeypatch):
    lengths = _record_answer_lengths(demo, monkeypatch)
    request = DemoRequest(str(image), QUESTION, "llava_v1", (TINY_RECIPE_RATIO,), max_new_tokens=400)
    events = run_request(demo, request)
    assert next(e for e in events if isinstance(e, PartialAnswer))
    events.close()  # what a server does with the handler of a client that went away
    with demo.lock:  # the generation thread has finished and reset the model
        assert _is_unpruned(demo.model)
    assert len(lengths) == 1 and lengths[0] < 400


def _prompt_tokens(demo, request) -> int:
    """The request's prompt length: its ids (one image placeholder) with the placeholder counted as
    the tower's visual tokens."""
    conv = conv_templates[request.conv_mode].copy()
    conv.append_message(conv.roles[0], image_prompt(request.question, demo.model.config))
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), demo.tokenizer, IMAGE_TOKEN_INDEX)
    return len(ids) - 1 + demo.model.get_model().num_visual_tokens()


def test_the_answer_length_is_capped_to_what_the_context_leaves_and_the_page_says_so(demo, image, monkeypatch,
                                                                                     caplog):
    request = DemoRequest(str(image), QUESTION, "llava_v1", (0.0,), max_new_tokens=400)
    prompt = _prompt_tokens(demo, request)
    monkeypatch.setattr(demo.model.config, "max_position_embeddings", prompt + 5)
    asked = []
    generate = demo.model.generate
    monkeypatch.setattr(demo.model, "generate",
                        lambda *args, **kwargs: asked.append(kwargs["max_new_tokens"]) or generate(*args, **kwargs))
    with caplog.at_level(logging.INFO, logger="llava.serve.demo_requests"):
        events = list(run_request(demo, request))
    note = f"Max new tokens lowered from 400 to 5: the prompt takes {prompt} of the model's {prompt + 5}-token context."
    assert asked == [5]
    assert events[0].note == note and events[-1].message.endswith(f"s. {note}")
    assert note in caplog.messages


def test_a_prompt_that_fills_the_context_is_refused(demo, image, monkeypatch):
    request = DemoRequest(str(image), QUESTION, "llava_v1", (0.0,))
    prompt = _prompt_tokens(demo, request)
    monkeypatch.setattr(demo.model.config, "max_position_embeddings", prompt)
    events = list(run_request(demo, request))
    assert [type(e) for e in events] == [RequestFailed]
    assert events[0].message == (f"Question: too long: prompt is {prompt} tokens, which leaves no room for an answer "
                                 f"in the model's context of {prompt} tokens (max_position_embeddings)")


def test_an_upload_waits_for_an_image_slot_and_is_refused_when_none_frees_up(demo, image, monkeypatch):
    monkeypatch.setattr(demo, "image_slots", ImageSlots(count=1, wait_s=0.2))
    with demo.image_slots.held():  # another upload is being read
        started = time.monotonic()
        with pytest.raises(RequestError, match=f"^{re.escape(BUSY_MESSAGE)}$"):
            demo.load_view(str(image))
        assert time.monotonic() - started >= 0.2
    assert demo.load_view(str(image))[0].size == (48, 48)  # the slot is free again


def test_visionzip_answers_with_merged_cells_tinted_and_flops_against_the_tower_count(demo, image):
    events = list(run_request(demo, _request(image, ratios=(TINY_RECIPE_RATIO,), policy="visionzip")))
    result = next(e.result for e in events if isinstance(e, BudgetDone))
    dims = demo.model.config
    n, d, m = demo.model.get_model().num_visual_tokens(), dims.hidden_size, dims.intermediate_size

    def layer(k):  # paper-convention multiply-adds of a layer entered and left by k visual tokens
        return 3 * k * d * d + 2 * k * k * d + k * d * d + 3 * k * d * m

    k = max(k for k in range(1, n + 1) if 100 * (1 - layer(k) / layer(n)) >= TINY_RECIPE_RATIO)
    dominant, _ = token_split(k)
    assert (result.num_visual, result.keep_counts) == (n, [k] * dims.num_hidden_layers)
    assert result.flops["paper_reduction_pct"] == pytest.approx(100 * (1 - layer(k) / layer(n)), rel=1e-12)
    # the [CLS] token is a dominant one; every other patch not kept as it is was merged
    assert int(result.masks[0].sum()) == dominant - 1
    assert int(result.merged.sum()) == n - (dominant - 1) and not (result.merged & result.masks[0]).any()
    view = np.full((24, 24, 3), 200, dtype=np.uint8)  # 2x2 pixels per cell of the tiny 12x12 grid
    picture = result.overlay(view, 0)
    row, col = (int(i) for i in np.argwhere(result.merged)[0])
    assert picture[2 * row, 2 * col].tolist() == [int(0.5 * 200 + 0.5 * c) for c in MERGED]
    row, col = (int(i) for i in np.argwhere(result.masks[0])[0])
    assert picture[2 * row, 2 * col].tolist() == [200, 200, 200]
    assert result.summary_lines()[0].endswith(f"(of {n}; {n - dominant + 1} patches merged in the vision tower)")
    assert _is_unpruned(demo.model)


def test_the_page_lists_every_policy_by_its_label(demo):
    pytest.importorskip("gradio")
    from llava.serve.web_layout import PageDefaults, build_page

    page = build_page(demo, PageDefaults(conv_mode="llava_v1", examples=()))
    radio = next(c for c in page.blocks.values() if getattr(c, "elem_id", None) == "policy")
    assert [tuple(choice) for choice in radio.choices] == [(METHOD_LABELS[name], name) for name in POLICIES]
    assert ("VisionZip", "visionzip") in [tuple(choice) for choice in radio.choices]

def test_the_page_queues_upload_previews_to_the_image_slots(demo):
    pytest.importorskip("gradio")
    from llava.serve.web_layout import PageDefaults, build_page

    page = build_page(demo, PageDefaults(conv_mode="llava_v1", examples=()))
    previews = [fn for fn in page.fns.values() if fn.name == "show_preview"]
    assert [(fn.concurrency_limit, fn.concurrency_id) for fn in previews] == [(demo.image_slots.count, "image")]


# --- the command line ------------------------------------------------------------------------

def _server_error(argv, capsys) -> str:
    """The one ``gradio_web_server: error:`` line the server's main prints before exiting 2."""
    from llava.serve.gradio_web_server import main

    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error: " in line]
    assert caught.value.code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("gradio_web_server: error: ")
    return lines[0].split("error: ", 1)[1]


@pytest.mark.parametrize("argv, message", [
    (["--model-path", "/no/such/model"], "model path /no/such/model does not exist"),
    (["--load-8bit", "--device", "cpu"], "--load-8bit: quantised weights need CUDA (bitsandbytes); on the CPU the "
                                         "model runs in float32"),
    (["--load-8bit", "--load-4bit", "--device", "cpu"], "--load-8bit and --load-4bit: pick one"),
    (["--recipe", "/no/such/recipes.json", "--device", "cpu"], "--recipe: /no/such/recipes.json does not exist"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
])
def test_bad_flags_are_one_line_and_exit_2(argv, message, capsys):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[serve]')")
    assert _server_error(argv, capsys) == message


def test_without_gradio_the_server_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    monkeypatch.delitem(sys.modules, "llava.serve.web_layout", raising=False)
    message = _server_error(["--device", "cpu"], capsys)
    assert message.startswith("the web demo needs gradio (") and message.endswith("pip install -e '.[serve]'")


# --- the page, in a real browser -------------------------------------------------------------

def _browser():
    """(chromium, chromedriver) paths, or a skip naming what is missing."""
    for module in ("gradio", "selenium"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[serve,dev]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (apt-get install "
                    "chromium chromium-driver)")
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_page(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the web server exited with {server.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the web server did not answer at {url} within {timeout_s} s: {log.read_text()}")


@pytest.fixture()
def server(tmp_path):
    """The web server on a free port of 127.0.0.1, its output in ``server.log``; stopped afterwards."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO)}
    log = tmp_path / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "llava.serve.gradio_web_server", "--host", "127.0.0.1",
                                    "--port", str(port), "--device", "cpu", "--model-path", str(DEMO_MODEL)],
                                   cwd=REPO, env=env,
                                   stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_page(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture()
def browser():
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _upload(driver, wait, path: Path) -> None:
    from selenium.webdriver.common.by import By

    for clear in driver.find_elements(By.CSS_SELECTOR, "#image-file button[aria-label=Clear]"):
        clear.click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image-file input[type=file]"))
    driver.find_element(By.CSS_SELECTOR, "#image-file input[type=file]").send_keys(str(path))


def _tick_only(driver, values) -> None:
    from selenium.webdriver.common.by import By

    for label in driver.find_elements(By.CSS_SELECTOR, "#ratios label"):
        box = label.find_element(By.CSS_SELECTOR, "input")
        if (box.get_attribute("name") in values) != box.is_selected():
            label.click()


def _screenshot(driver, path: Path) -> None:
    """The whole page as PNG."""
    driver.set_window_size(1400, driver.execute_script("return document.documentElement.scrollHeight"))
    driver.save_screenshot(str(path))


def test_the_page_answers_at_two_ratios_as_run_llava_does(server, browser, tmp_path, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    book = RecipeBook.load(DEMO_MODEL / "fitprune_recipes.json")
    status = lambda d: d.find_element(By.ID, "status").text  # noqa: E731
    browser.get(server)
    try:
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image-file input[type=file]"))
        not_an_image = tmp_path / "notes.png"
        not_an_image.write_text("these are notes, not pixels")
        _upload(browser, wait, not_an_image)
        wait.until(lambda d: "notes.png" in status(d))
        assert status(browser) == "Image: notes.png: not an image file (PIL cannot identify its format)"

        _upload(browser, wait, SHAPES_IMAGE)  # the server still serves after the bad file
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#preview img") and status(d) == "")
        browser.find_element(By.CSS_SELECTOR, "#question textarea").send_keys(SHAPES_QUESTION)
        _tick_only(browser, {"30", "60"})
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda d: status(d).startswith("Answered at"))
        assert status(browser).startswith("Answered at 2 of 2 budgets")
        pages = [(browser.find_element(By.ID, f"title-{slot}").text,
                  browser.find_element(By.CSS_SELECTOR, f"#answer-{slot} textarea").get_attribute("value"),
                  browser.find_element(By.ID, f"stats-{slot}").text) for slot in range(2)]
        overlay_label = lambda d: d.find_element(By.CSS_SELECTOR, "#overlay-0 [data-testid=block-label]").text  # noqa: E731
        assert overlay_label(browser) == f"Kept after layer 7: {book.get(30).keep_counts[7]} of 144 patches"
        layer = browser.find_element(By.CSS_SELECTOR, "#layer input[type=number]")
        layer.clear()
        layer.send_keys("0", Keys.TAB)
        wait.until(lambda d: "layer 0" in overlay_label(d))
        assert overlay_label(browser) == f"Kept after layer 0: {book.get(30).keep_counts[0]} of 144 patches"
        layer.clear()
        layer.send_keys("7", Keys.TAB)
        wait.until(lambda d: "layer 7" in overlay_label(d))
    finally:
        _screenshot(browser, tmp_path / "web_demo.png")

    for (title, answer, stats), ratio in zip(pages, (30, 60)):
        kept = re.search(r"Visual tokens kept after each layer: ([\d, ]+) \(of 144\)", stats).group(1)
        counts = [int(k) for k in kept.split(", ")]
        assert title == f"{ratio} % · FitPrune"  # the method label (METHOD_LABELS)
        assert (answer, counts[-1]) == _run_llava(DEMO_MODEL, SHAPES_IMAGE, SHAPES_QUESTION, ratio, capsys, 128)
        assert counts == list(book.get(ratio).keep_counts)
        assert re.search(r"FLOPs removed: [\d.]+% paper .* [\d.]+% full", stats), stats
        assert re.search(r"Prefill latency: [\d.]+ ms", stats), stats


def test_a_gradio_client_that_disconnects_mid_answer_frees_the_model_for_the_next(demo, image, tiny_checkpoint,
                                                                                  monkeypatch, capsys):
    """The page served in-process; a real gradio client starts a long pruned answer and cancels
    it: the generation stops, the model is reset, and the next client's answer is run_llava's."""
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    from llava.serve.web_layout import PageDefaults, build_page

    lengths = _record_answer_lengths(demo, monkeypatch)
    page = build_page(demo, PageDefaults(conv_mode="llava_v1", ratios=(0.0,), max_new_tokens=MAX_NEW, examples=()))
    page.queue(default_concurrency_limit=1)
    _, url, _ = page.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                            quiet=True)
    try:
        client = Client(url, verbose=False)
        ratio = f"{TINY_RECIPE_RATIO:g}"
        long_answer = 1024  # the slider's maximum
        job = client.submit(handle_file(str(image)), QUESTION, "llava_v1", "fitprune", [ratio], "", 0,
                            long_answer, 0, api_name="/answer")
        deadline = time.monotonic() + 60
        while not demo.lock.locked():  # the pruned generation is running
            assert time.monotonic() < deadline and not job.done(), "the request never reached the model"
            time.sleep(0.02)
        time.sleep(0.1)
        job.cancel()
        deadline = time.monotonic() + 60
        while not lengths:
            assert time.monotonic() < deadline, "the cancelled generation did not stop"
            time.sleep(0.05)
        assert lengths[0] < long_answer
        with demo.lock:
            assert _is_unpruned(demo.model)
        next_job = client.submit(handle_file(str(image)), QUESTION, "llava_v1", "fitprune", ["0"], "", 0, MAX_NEW,
                                 0, api_name="/answer")
        next_job.result(timeout=60)
        streamed = next_job.outputs()
    finally:
        page.close()
    # each streamed output: status, preview, then each column's title, answer, overlay, curve, stats
    # (the state and the columns themselves are not sent to a client)
    answers = [output[2 + 1] for output in streamed if isinstance(output[2 + 1], str)]
    stats = [output[2 + 4] for output in streamed if isinstance(output[2 + 4], str) and output[2 + 4]]
    assert (answers[-1], None) == _run_llava(tiny_checkpoint, image, QUESTION, 0, capsys)
    assert stats[-1].startswith("Visual tokens kept after each layer: 144, 144, 144, 144 (of 144)")
    assert len(lengths) == 2 and _is_unpruned(demo.model)
