"""`python benchmarks/prefill_speed.py` at toy sizes: its section, rows and the anyres table."""
import pytest
import torch

from fitprune.lab.benchmarks_file import command_line
from benchmarks.prefill_speed import main
from benchmarks.prefill_speed_report import SECTION_HEADING, section_heading

TOY = ["--hidden", "64", "--intermediate", "128", "--layers", "4", "--heads", "4", "--vocab", "100",
       "--visual-tokens", "144", "--repeats", "1", "--warmup", "0", "--shape", "published", "--max-seconds", "1",
       "--allow-contended", "--threads", "1"]


def test_the_section_has_every_row_and_the_anyres_table(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\n## Another section\n\nkept\n")
    assert main(TOY + ["--reduction-ratio", "0", "60", "--anyres-visual-tokens", "720", "--anyres-reduction-ratio", "60",
                       "--output", str(output)]) == 0
    text = output.read_text()
    assert "## Another section\n\nkept" in text and text.count(SECTION_HEADING) == 1
    section = text[text.index(SECTION_HEADING):]
    rows = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| ")]
    assert rows == ["| ratio", "| unpruned (no hook)", "| 0", "| 60", "| transformers (eager)",
                    "| ratio", "| unpruned (no hook)", "| 60"]
    assert "35 prefix + 720 visual + 29 text tokens" in section
    assert "- 60: [" in section and "max |diff| = " in section
    assert "FitPrune / random " in section and "(median of per-round ratios)" in section


def test_no_anyres_table_when_skipped(capsys):
    assert main(TOY + ["--reduction-ratio", "60", "--anyres-visual-tokens", "0", "--no-random-policy", "--output", "-"]) == 0
    assert "LLaVA-NeXT-shaped" not in capsys.readouterr().out


def test_batch_and_logit_rows_change_the_ideal(capsys):
    assert main(TOY + ["--reduction-ratio", "60", "--anyres-visual-tokens", "0", "--no-random-policy", "--output", "-",
                       "--batch", "2", "--logits", "all"]) == 0
    every_row = capsys.readouterr().out
    assert "batch 2 (the same prompt in every sample)" in every_row and "logits of every row left" in every_row
    assert main(TOY + ["--reduction-ratio", "60", "--anyres-visual-tokens", "0", "--no-random-policy", "--output", "-"]) == 0
    last_row = capsys.readouterr().out
    assert "batch 1 (" in last_row and "`num_logits_to_keep=1`" in last_row

    def ideal_of_60(section: str) -> float:
        row = next(line for line in section.splitlines() if line.startswith("| 60 |"))
        return float(row.split(" | ")[7])

    # With a 100-word vocabulary and 208 rows, the LM head on every row is a visible share of the FLOPs,
    # and pruning removes LM head rows too, so the ideal speed-up is larger with every row's logits.
    assert ideal_of_60(every_row) > ideal_of_60(last_row) > 1.0


def test_another_batch_size_writes_its_own_section(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    base = TOY + ["--reduction-ratio", "60", "--anyres-visual-tokens", "0", "--no-random-policy", "--output", str(output)]
    assert main(base) == 0
    assert main(base + ["--batch", "2"]) == 0
    assert main(base + ["--batch", "2"]) == 0  # rewrites its section, leaves batch 1's
    text = output.read_text()
    assert text.count(SECTION_HEADING) == 1 and text.count(section_heading(2)) == 1
    assert text.index(SECTION_HEADING) < text.index(section_heading(2))


def test_a_label_gives_its_own_section():
    assert section_heading(1, "at LLaVA-7B layer width") == \
        "## Prefill speed at LLaVA-7B layer width (benchmarks/prefill_speed.py)"
    assert section_heading(4, "hidden 4096") == "## Prefill speed at batch 4, hidden 4096 (benchmarks/prefill_speed.py)"
    assert section_heading(1) == SECTION_HEADING


def test_the_recorded_command_quotes_its_arguments():
    assert command_line("python benchmarks/prefill_speed.py", ["--label", "at LLaVA-7B layer width", "--batch", "4"]) \
        == "python benchmarks/prefill_speed.py --label 'at LLaVA-7B layer width' --batch 4"


def test_a_half_precision_run_says_its_dtype(capsys):
    assert main(TOY + ["--reduction-ratio", "60", "--anyres-visual-tokens", "0", "--output", "-", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "vocab 100, bfloat16, batch 1" in out and "| 60 | " in out and "FitPrune / random " in out
    assert "max |diff| = " in out


def test_a_missing_gpu_is_a_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(SystemExit) as exit_info:
        main(TOY + ["--device", "cuda", "--output", "-"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"error: --device cuda: no CUDA device here (torch {torch.__version__})")
