"""Visual-token pruning at inference: the one mechanism in the decoder and what it reads.

Words used the same way everywhere in this project:

- *recipe*: for one FLOPs budget (the *reduction ratio*, percent), the visual tokens left after
  each decoder layer; a *recipe book* is the JSON file of one model's recipes (`recipe`), found by
  `recipe_lookup`.
- *keep counts*: visual tokens left after each layer (a recipe's, or a baseline's).
- *schedule*: turns keep counts into per-sample counts for a batch (`schedules`).
- *policy*: ranks the live visual tokens of a layer: fitprune, fastv, random, and the other methods
  (`policies`, `similarity`); some act before a layer, some bring their own keep counts for a
  FLOPs budget (`budget`) instead of a recipe.
- *pruner*: the prefill hook that, after each layer's attention, asks the schedule how many
  tokens to keep and the policy which, and drops the rest (`pruner.TokenPruner`).

`from_config` reads a config's pruning fields once (`PruningSettings`) and builds the pruner;
`ratio` parses a user's reduction ratio; `flops` counts what a run removes, in the paper's and
the full convention. Recipes are fitted offline by the `fitprune` package, which this one never
imports.
"""
