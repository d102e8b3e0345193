"""The decode-speed and long-prompt-memory benchmarks on tiny sizes: their sections and rows,
the decode benchmark's repeated cache, the long prompt's size; bad flags."""
import argparse
import json

import pytest
import sentencepiece
import torch

from fitprune.defaults import DEMO_MODEL_PATH
from benchmarks import decode_speed, long_prompt_memory
from fitprune.lab.prefill_setup import build_config, build_prompt, fit_keep_counts
from llava.model.language_model.modeling_llama import LlamaForCausalLM
from llava.model.language_model.sequence_layout import SequenceLayout
from llava.model.pruning.flops import DecoderDims

TINY_SIZES = {"hidden": 64, "intermediate": 128, "layers": 4, "heads": 4, "kv_heads": None, "vocab": 128,
              "prefix_tokens": 3, "visual_tokens": 32, "text_tokens": 4}
TINY_FLAGS = [flag for key, value in TINY_SIZES.items() if value is not None
              for flag in ("--" + key.replace("_", "-"), str(value))]
OTHER_SECTION = "## Another benchmark\n\nits table\n"


@pytest.fixture()
def tiny_decoder():
    """A tiny random decoder, its batch-1 prompt and the 60% keep counts."""
    torch.manual_seed(0)
    config = build_config(argparse.Namespace(**TINY_SIZES))
    model = LlamaForCausalLM(config).eval()
    embeds, layout = build_prompt(3, 32, 4, 64, seed=0)
    counts = fit_keep_counts(DecoderDims.from_config(config), "published", 60.0, 32)
    return model, embeds, layout, counts


def test_decode_benchmark_writes_one_row_per_batch_and_budget(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\n" + OTHER_SECTION)
    code = decode_speed.main([*TINY_FLAGS, "--batch-sizes", "1", "2", "--reduction-ratio", "60", "90", "--steps", "2",
                              "--repeats", "1", "--warmup", "0", "--max-seconds", "0", "--threads", "1",
                              "--allow-contended", "--output", str(output)])
    assert code == 0
    text = output.read_text()
    assert OTHER_SECTION in text
    section = text[text.index(decode_speed.SECTION_HEADING):]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| batch")]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| 1", "unpruned"], ["| 1", "60"], ["| 1", "90"], ["| 2", "unpruned"], ["| 2", "60"], ["| 2", "90"]]
    for row in rows[0], rows[3]:  # the unpruned rows are their own reference
        assert row.split(" | ")[4] == "1.00" and row.split(" | ")[7] == "1.00" and row.endswith("| 1.00 |")


def test_repeated_cache_decodes_like_the_prompt_prefilled_twice(tiny_decoder):
    model, embeds, layout, counts = tiny_decoder
    with torch.inference_mode():
        single = decode_speed.prefill_prompt(model, embeds, layout, 32, counts)
        repeated = decode_speed.repeat_cache(single.cache, 2)
        lengths = repeated.layer_lengths()
        tokens = decode_speed.decode_steps(model, repeated, single.first_token.repeat(2), steps=3)
        pair_layout = SequenceLayout.from_segments(layout.segment.repeat(2, 1), layout.visual_index.repeat(2, 1))
        pair = decode_speed.prefill_prompt(model, embeds.repeat(2, 1, 1), pair_layout, 32, counts)
        expected = decode_speed.decode_steps(model, pair.cache, pair.first_token, steps=3)
    assert repeated.layer_lengths() == lengths == pair.cache.layer_lengths(), "decoding left the cache as it was"
    assert single.keep_counts == counts
    assert torch.equal(tokens, expected)
    # keys and values: (B, H_kv, S_l, D) float32 per layer; key masks (B, S_l) bool
    assert repeated.nbytes() == sum(2 * (2 * 4 * n * 16 * 4) + 2 * n for n in lengths)


def test_long_prompt_benchmark_writes_its_rows(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    code = long_prompt_memory.main(["--text-tokens", "40", "--max-new-tokens", "2", "--threads", "1",
                                    "--work-dir", str(tmp_path / "work"), "--output", str(output)])
    assert code == 0
    section = output.read_text()
    assert section.startswith("# Benchmarks\n\n" + long_prompt_memory.SECTION_HEADING + "\n")
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ratio")]
    # the demo model's 144 visual tokens; its 60% recipe keeps 45 after the last layer
    assert [row.split(" | ")[:2] for row in rows] == [["| unpruned", "144"], ["| 60", "45"]]
    assert rows[0].split(" | ")[3] == "1.00"
    for ratio in ("0", "60"):
        record = json.loads((tmp_path / "work" / f"llava-v1.5-shapes-r{ratio}.run.json").read_text())
        assert record["memory"]["measure"] == "ru_maxrss"
        assert record["pruning"]["reduction_ratio"] == float(ratio)


def test_long_prompt_is_the_fewest_sentences_reaching_the_token_count():
    tokenizer_model = f"{DEMO_MODEL_PATH}/tokenizer.model"
    text = long_prompt_memory.filler_text(long_prompt_memory.Path(tokenizer_model), 3500)
    filler, question = text.split("\n", 1)
    assert question == long_prompt_memory.QUESTION
    sentence = long_prompt_memory.FILLER_SENTENCE
    repeats = (len(filler) + 1) // len(sentence)
    assert filler + " " == sentence * repeats
    processor = sentencepiece.SentencePieceProcessor(model_file=tokenizer_model)
    assert len(processor.encode(sentence * repeats)) >= 3500 > len(processor.encode(sentence * (repeats - 1)))


@pytest.mark.parametrize("module, flags, message", [
    (decode_speed, ["--reduction-ratio", "0"], "--reduction-ratio: 0 is the unpruned row, which always runs; give pruned budgets only"),
    (decode_speed, ["--batch-sizes", "0"], "--batch-sizes must be >= 1, got [0]"),
    (long_prompt_memory, ["--reduction-ratio", "0"],
     "--reduction-ratio: 0 is the unpruned run, which always runs; give pruned ratios only"),
    (long_prompt_memory, ["--image", "missing.png"], "--image: playground/shapes/missing.png is not a file"),
])
def test_bad_flags_exit_2_naming_the_flag(module, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main([*flags, "--output", "-"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(message)
