"""``python -m genrl_jax``: the command line of :mod:`genrl_jax.cli`."""

import sys

from genrl_jax.cli import main

if __name__ == "__main__":
  sys.exit(main())
