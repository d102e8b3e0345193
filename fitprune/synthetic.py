"""`python -m fitprune.synthetic`: writes the synthetic shapes task's data; the code lives
in `fitprune.lab.synthetic`."""
import sys

from fitprune.lab.synthetic_cli import main

if __name__ == "__main__":
    sys.exit(main())
