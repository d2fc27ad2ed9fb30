"""``python -m ddnn …``: the CLI, also what ``torchrun … -m ddnn train …`` starts in each process."""

import sys

from ddnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
