import sys

from gradsum.cli import main

sys.exit(main())
