"""``python -m fusion3d.learned.training <launch.json>``: one torchrun rank."""

import sys

from fusion3d.learned.training.torchrun import main

if __name__ == "__main__":
    sys.exit(main())
