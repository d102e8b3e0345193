"""`python -m fitprune.train_demo`: trains the bundled demo model; the code lives in `fitprune.lab.train_demo`."""
import sys

from fitprune.lab.train_demo import main

if __name__ == "__main__":
    sys.exit(main())
