"""`python -m fitprune.demo`: the main job on the bundled demo model; the code lives in `fitprune.lab.demo`."""
import sys

from fitprune.lab.demo import main

if __name__ == "__main__":
    sys.exit(main())
