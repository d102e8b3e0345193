"""`python benchmarks/prefill_speed.py` at toy sizes: its section, rows and the anyres table."""
from fitprune.lab.prefill_speed import SECTION_HEADING, main

TOY = ["--hidden", "64", "--intermediate", "128", "--layers", "4", "--heads", "4", "--vocab", "100",
       "--visual-tokens", "144", "--repeats", "1", "--warmup", "0", "--shape", "published", "--max-seconds", "1",
       "--allow-contended", "--threads", "1"]


def test_the_section_has_every_row_and_the_anyres_table(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\n## Another section\n\nkept\n")
    assert main(TOY + ["--ratios", "0", "60", "--anyres-visual-tokens", "720", "--anyres-ratios", "60",
                       "--output", str(output)]) == 0
    text = output.read_text()
    assert "## Another section\n\nkept" in text and text.count(SECTION_HEADING) == 1
    section = text[text.index(SECTION_HEADING):]
    rows = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| ")]
    assert rows == ["| ratio", "| unpruned (no hook)", "| 0", "| 60", "| transformers (eager)",
                    "| ratio", "| unpruned (no hook)", "| 60"]
    assert "35 prefix + 720 visual + 29 text tokens" in section
    assert "- 60: [" in section and "max |diff| = " in section


def test_no_anyres_table_when_skipped(capsys):
    assert main(TOY + ["--ratios", "60", "--anyres-visual-tokens", "0", "--no-random-policy", "--output", "-"]) == 0
    assert "LLaVA-NeXT-shaped" not in capsys.readouterr().out
