"""`python -m fitprune.bench`: pruning quality on the demo model against FastV, random and uniform
baselines; the code lives in `fitprune.lab.bench`."""
import sys

from fitprune.lab.bench import main

if __name__ == "__main__":
    sys.exit(main())
