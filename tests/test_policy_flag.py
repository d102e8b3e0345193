"""``--policy NAME`` on every entry point: the named method prunes, and an unknown name is one line
listing the registry's names, exit 2."""
import re

import pytest

from fitprune import calibrate, visualize
from llava.eval import model_vqa_loader, run_llava
from llava.model.pruning.policies import POLICIES
from llava.serve import cli, gradio_web_server
from tests.driver_runs import driver_record
from tests.helpers import TINY_KEEP_COUNTS, TINY_RECIPE_RATIO

IMAGE = "tests/data/shapes.png"
KEPT_LINE = re.compile(r"visual tokens kept after the last layer: (\d+) of (\d+)")
KNOWN = ", ".join(repr(name) for name in POLICIES)


def _run_llava(checkpoint, capsys, *extra) -> int:
    """run_llava's 'kept after the last layer' count for one greedy answer."""
    run_llava.main(["--model-path", str(checkpoint), "--image-file", IMAGE, "--query", "What is in the picture?",
                    "--device", "cpu", "--temperature", "0", "--max-new-tokens", "2",
                    "--reduction-ratio", f"{TINY_RECIPE_RATIO:g}", *extra])
    kept = KEPT_LINE.findall(capsys.readouterr().err)
    assert len(kept) == 1
    return int(kept[0][0])


def test_run_llava_and_a_driver_prune_with_the_named_policy(tiny_checkpoint, tmp_path, capsys):
    assert _run_llava(tiny_checkpoint, capsys) == TINY_KEEP_COUNTS[-1]  # default: the checkpoint's FitPrune recipe
    divprune = _run_llava(tiny_checkpoint, capsys, "--policy", "divprune")
    # DivPrune cuts once before layer 0 to the FLOPs budget: fewer tokens than the recipe keeps at
    # layer 0 (all 144), more than it keeps after the last layer
    assert TINY_KEEP_COUNTS[-1] < divprune < TINY_KEEP_COUNTS[0]

    record = driver_record(tiny_checkpoint, tmp_path, "--policy", "divprune")
    assert record["pruning"]["policy"] == "divprune"
    assert record["visual_tokens"]["kept_per_layer_mean"] == [divprune] * len(TINY_KEEP_COUNTS)


@pytest.mark.parametrize("command, prog, argv", [
    (run_llava, "run_llava", ["--model-path", "m", "--image-file", IMAGE, "--query", "q"]),
    (cli, None, ["--model-path", "m", "--image-file", IMAGE]),
    (model_vqa_loader, "model_vqa_loader", ["--model-path", "m", "--question-file", "q.jsonl"]),
], ids=["run_llava", "cli", "model_vqa_loader"])
def test_an_unknown_policy_is_one_line_listing_the_known_ones(command, prog, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(argv + ["--policy", "nope"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.endswith(f"error: argument --policy: invalid choice: 'nope' (choose from {KNOWN})\n")
    assert prog is None or err.startswith(f"{prog}: error:")


@pytest.mark.parametrize("build_parser", [gradio_web_server.build_parser, calibrate.build_parser],
                         ids=["web demo", "calibrate"])
def test_the_web_demo_and_calibrate_take_the_registry_names(build_parser, capsys):
    assert build_parser().parse_args(["--policy", "dart"]).policy == "dart"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--policy", "nope"])
    assert capsys.readouterr().err.endswith(f"(choose from {KNOWN})\n")


def test_visualize_refuses_an_unknown_policy_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        visualize.main(["--image", IMAGE, "--question", "q", "--out", "o.png", "--policy", "nope"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"python -m fitprune.visualize: error: argument --policy: invalid choice: "
                                       f"'nope' (choose from {KNOWN})\n")


@pytest.mark.parametrize("policy, reason", [
    ("dart", "dart sets its own keep counts from the budget and reads no recipe; calibrate fits FitPrune's"),
    ("recipe+fastv", "calibrate fits FitPrune's recipes; recipe+fastv prunes with that book as is (calibrate with "
                     "fitprune, then pass --policy recipe+fastv to run_llava or a driver)"),
])
def test_calibrate_refuses_other_methods_with_the_reason(policy, reason, capsys):
    with pytest.raises(SystemExit) as exit_info:
        calibrate.main(["--policy", policy])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"python -m fitprune.calibrate: error: argument --policy: {reason}\n"
