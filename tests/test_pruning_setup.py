"""Pruning is set up before `forward`: `set_pruning`, the config's fields read at load and before
`generate`, a temporary hook, and the `LlavaConfig` that declares the fields."""
import json
import shutil

import pytest
import torch

from llava.model.configuration_llava import LlavaConfig
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.pruning.from_config import PruningSettings, build_pruner
from llava.model.pruning.policies import RandomPolicy
from llava.model.pruning.pruner import TokenPruner
from llava.model.pruning.recipe import RecipeBook, RecipeError
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.model.pruning.schedules import RecipeSchedule
from tests.helpers import QUESTIONS, TINY_KEEP_COUNTS, TINY_RECIPE_RATIO, build_prompt, encode_batch, sample_images


def _batch(tiny, n=2):
    tokenizer, model, processor = tiny
    ids, mask = encode_batch(tokenizer, [build_prompt(q) for q in QUESTIONS[:n]], "left")
    return ids, mask, sample_images(processor, model.config, n)


def _last_counts(out) -> list:
    return out.pruning_trace.counts()[-1].tolist()


def test_set_pruning_builds_the_pruner_now_and_writes_the_config(tiny):
    _, model, _ = tiny
    ids, mask, images = _batch(tiny)
    pruner = model.set_pruning(TINY_RECIPE_RATIO)
    assert model.get_model().prefill_hook is pruner
    assert tuple(pruner.recipe.keep_counts) == TINY_KEEP_COUNTS
    config = model.config
    assert (config.reduction_ratio, config.fitprune_recipe, config.fitprune_policy, config.fitprune_seed) == (
        TINY_RECIPE_RATIO, None, "fitprune", 0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, images=images, use_cache=False)
    assert _last_counts(out) == [TINY_KEEP_COUNTS[-1]] * 2
    assert model.set_pruning() is None and model.get_model().prefill_hook is None
    assert config.reduction_ratio == 0


def test_forward_never_reads_the_config_and_generate_applies_its_edits(tiny, monkeypatch):
    """The authors' way (`config.reduction_ratio = R` then `generate`) prunes; a bare forward runs the
    set-up hook (none here) and opens no recipe, whatever the config now says."""
    tokenizer, model, _ = tiny
    ids, mask, images = _batch(tiny)
    model.config.reduction_ratio = TINY_RECIPE_RATIO
    original_load = RecipeBook.load.__func__
    loads = []

    def counting_load(cls, path):
        loads.append(path)
        return original_load(cls, path)

    monkeypatch.setattr(RecipeBook, "load", classmethod(counting_load))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, images=images, use_cache=False)
    assert out.pruning_trace is None and loads == []
    with torch.no_grad():
        model.generate(ids, attention_mask=mask, images=images, do_sample=False, max_new_tokens=2,
                       pad_token_id=tokenizer.pad_token_id)
    assert model.last_pruning_trace.counts()[-1].tolist() == [TINY_KEEP_COUNTS[-1]] * 2
    assert len(loads) == 1
    with torch.no_grad():
        model.generate(ids, attention_mask=mask, images=images, do_sample=False, max_new_tokens=2,
                       pad_token_id=tokenizer.pad_token_id)
    assert len(loads) == 1  # unchanged fields: the pruner set up before is reused


def test_an_explicit_recipe_file_wins_over_the_lookup(tiny, tiny_checkpoint, tmp_path):
    _, model, _ = tiny
    num_visual = model.get_model().num_visual_tokens()
    missing = tmp_path / "missing.json"
    with pytest.raises(RecipeError) as err:
        build_pruner(PruningSettings(TINY_RECIPE_RATIO, str(missing)), model.config, num_visual)
    assert str(err.value) == f"recipe file {missing} does not exist"
    elsewhere = tmp_path / "book.json"
    shutil.copy(tiny_checkpoint / RECIPE_FILE_IN_CHECKPOINT, elsewhere)
    pruner = build_pruner(PruningSettings(TINY_RECIPE_RATIO, str(elsewhere)), model.config, num_visual)
    assert pruner.recipe_file == elsewhere


def test_a_saved_pruned_model_reloads_pruned(tiny, tiny_checkpoint, tmp_path):
    _, model, _ = tiny
    ids, mask, images = _batch(tiny)
    recipe = tiny_checkpoint / RECIPE_FILE_IN_CHECKPOINT
    model.set_pruning(TINY_RECIPE_RATIO, recipe=recipe, policy="random", seed=3)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {k: saved[k] for k in ("reduction_ratio", "fitprune_recipe", "fitprune_policy", "fitprune_seed")} == {
        "reduction_ratio": TINY_RECIPE_RATIO, "fitprune_recipe": str(recipe), "fitprune_policy": "random",
        "fitprune_seed": 3}
    reloaded = LlavaLlamaForCausalLM.from_pretrained(str(tmp_path)).eval()
    hook = reloaded.get_model().prefill_hook
    assert isinstance(hook.policy, RandomPolicy) and tuple(hook.recipe.keep_counts) == TINY_KEEP_COUNTS
    reloaded.get_vision_tower().load_model()
    with torch.no_grad():
        out = reloaded(input_ids=ids, attention_mask=mask, images=images, use_cache=False)
    assert _last_counts(out) == [TINY_KEEP_COUNTS[-1]] * 2


def test_a_temporary_hook_is_removed_even_on_an_exception(tiny):
    _, model, _ = tiny
    pruner = model.set_pruning(TINY_RECIPE_RATIO)
    num_visual = model.get_model().num_visual_tokens()
    other = TokenPruner(RandomPolicy(0), RecipeSchedule(TINY_KEEP_COUNTS, num_visual))
    with pytest.raises(RuntimeError, match="inside"):
        with model.prefill_hook_installed(other) as installed:
            assert installed is other and model.get_model().prefill_hook is other
            raise RuntimeError("inside")
    assert model.get_model().prefill_hook is pruner


def test_llava_config_declares_upstream_defaults_and_saves_upstream_names(tmp_path):
    config = LlavaConfig()
    assert (config.mm_vision_tower, config.mm_projector_type, config.mm_vision_select_feature,
            config.mm_patch_merge_type, config.image_aspect_ratio, config.mm_use_im_start_end,
            config.mm_use_im_patch_token, config.tune_mm_mlp_adapter, config.is_multipath_encoder) == (
        None, "linear", "patch", "flat", None, False, True, False, False)
    assert (config.reduction_ratio, config.fitprune_recipe, config.fitprune_policy, config.fitprune_seed) == (
        0.0, None, "fitprune", 0)
    config.save_pretrained(tmp_path)
    text_only = json.loads((tmp_path / "config.json").read_text())
    assert "mm_vision_tower" not in text_only  # upstream builds a tower whenever the key exists
    upstream = {"model_type": "llava", "mm_vision_tower": "openai/clip-vit-large-patch14-336",
                "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "image_aspect_ratio": "pad",
                "mm_use_im_patch_token": False, "hidden_size": 64}
    (tmp_path / "config.json").write_text(json.dumps(upstream))
    loaded = LlavaConfig.from_pretrained(tmp_path)
    loaded.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert {k: again[k] for k in upstream} == upstream


def test_no_recipe_named_looks_one_up_even_after_an_explicit_one(tiny, tiny_checkpoint, tmp_path):
    _, model, _ = tiny
    elsewhere = tmp_path / "book.json"
    shutil.copy(tiny_checkpoint / RECIPE_FILE_IN_CHECKPOINT, elsewhere)
    assert model.set_pruning(TINY_RECIPE_RATIO, recipe=elsewhere).recipe_file == elsewhere
    assert model.set_pruning(TINY_RECIPE_RATIO).recipe_file == tiny_checkpoint / RECIPE_FILE_IN_CHECKPOINT
