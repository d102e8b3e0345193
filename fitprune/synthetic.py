"""`python -m fitprune.synthetic`: writes a synthetic task's data; the command is
`fitprune.lab.synthetic`."""
import sys

from fitprune.lab.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
