"""Visual-token pruning at inference: the one mechanism in the decoder and what it reads.

Words used the same way everywhere in this project (code, flags, JSON, docs):

- *reduction ratio* (``reduction_ratio``, flag ``--reduction-ratio``, variable ``REDUCTION_RATIO``):
  the budget, the percent of the paper-convention FLOPs to remove; 0 is unpruned. User input is
  parsed once, by `ratio.parse_reduction_ratio` (60 and 0.6 both mean 60 %).
- *paper reduction* / *full reduction* (``paper_reduction``, ``full_reduction``): the percent of
  FLOPs a run or a recipe removes, in the paper's convention (visual tokens only, one FLOP per
  multiply-add) or the full one (every token, two FLOPs per multiply-add, the LM head); a recipe
  stores what it removes as ``achieved_paper`` / ``achieved_full`` (`flops`, `traced_flops`,
  `tower_flops`).
- *recipe*: for one reduction ratio, the visual tokens left after each decoder layer; a *recipe
  book* is the JSON file of one model's recipes (`recipe`), named by ``--recipe`` or found by
  `recipe_lookup`.
- *keep counts*: visual tokens left after each layer (a recipe's, or a method's own).
- *schedule*: turns keep counts into per-sample counts for a batch (`schedules`); a method may
  solve its own from the reduction ratio instead of a recipe (`budget`).
- *policy* (``--policy``, ``POLICY``): ranks the live visual tokens: fitprune, fastv, random and
  the other methods (`policies`, `similarity`, `visionzip`); some act before a layer or in the
  vision tower.
- *pruner*: the decoder's prefill hook that asks the schedule how many tokens to keep and the
  policy which, and drops the rest (`pruner.TokenPruner`).
- *trace*: what a prefill kept, the visual tokens entering and leaving each layer
  (`llava.model.language_model.prefill_hook.PruningTrace`).

A model's pruning is set up by `LlavaLlamaForCausalLM.set_pruning` (`llava.model.pruning_setup`),
which checks the settings (`from_config.PruningSettings`) and builds the pruner
(`from_config.build_pruner`) before any forward. Recipes are fitted offline by the `fitprune`
package, which this one never imports.
"""
