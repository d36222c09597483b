"""`python -m songweave TOOL [FLAGS]`: the same tools as the `creative-TOOL` commands."""

import sys

from songweave.commands import main

sys.exit(main())
