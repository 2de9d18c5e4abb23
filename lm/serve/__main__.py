"""`python -m lm.serve`: see lm/serve/__init__.py."""
import sys

from lm.serve import main

if __name__ == "__main__":
    sys.exit(main())
