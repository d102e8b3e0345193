"""Pictures of what pruning kept."""
import numpy as np
import torch
from PIL import Image

from fitprune.visualize import choose_layers, kept_patch_masks, main, shade_dropped
from tests.helpers import TINY_KEEP_COUNTS, TINY_RECIPE_RATIO


def test_masks_and_shading_follow_the_kept_grid_indices():
    masks = kept_patch_masks([torch.tensor([0, 1, 2, 3]), torch.tensor([0, 3])], 4)
    assert masks.tolist() == [[[True, True], [True, True]], [[True, False], [False, True]]]
    image = np.full((4, 4, 3), 255, dtype=np.uint8)
    shaded = shade_dropped(image, masks[1])
    assert (shaded[:2, :2] == 255).all() and (shaded[2:, 2:] == 255).all()
    assert (shaded[:2, 2:] < 255).all() and (shaded[2:, :2] < 255).all()


def test_chosen_layers_are_those_that_drop():
    assert choose_layers([144, 97, 97, 61, 30], 144) == [1, 3, 4]
    assert len(choose_layers(list(range(100, 80, -1)), 144, limit=6)) == 6


def test_cli_draws_png_and_gif(tiny_checkpoint, tmp_path, capsys):
    image = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((30, 50, 3)) * 255).astype(np.uint8)).save(image)
    for out, extra in ((tmp_path / "kept.png", []), (tmp_path / "kept.gif", ["--gif"])):
        code = main(["--model-path", str(tiny_checkpoint), "--image", str(image), "--question", "What?",
                     "--reduction-ratio", str(TINY_RECIPE_RATIO), "--out", str(out), *extra])
        assert code == 0 and out.stat().st_size > 0
        assert f"{TINY_KEEP_COUNTS[-1]} of 144 visual tokens kept" in capsys.readouterr().out
    changes = sum(a > b for a, b in zip((144,) + TINY_KEEP_COUNTS, TINY_KEEP_COUNTS))
    assert Image.open(tmp_path / "kept.gif").n_frames == 1 + changes  # identical frames are merged


def test_cli_rejects_a_missing_image(tiny_checkpoint, tmp_path, capsys):
    code = main(["--model-path", str(tiny_checkpoint), "--image", str(tmp_path / "none.png"), "--question", "Q",
                 "--reduction-ratio", "50", "--out", str(tmp_path / "x.png")])
    assert code == 2 and "none.png" in capsys.readouterr().err
