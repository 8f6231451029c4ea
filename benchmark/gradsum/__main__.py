"""`python -m gradsum ...` (what `torchrun -m gradsum run ...` starts in every process)."""

import sys

from gradsum.cli import main

sys.exit(main())
