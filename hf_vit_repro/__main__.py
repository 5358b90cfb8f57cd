"""`python -m hf_vit_repro ...` (what `accelerate launch -m hf_vit_repro` runs) is `vit-repro ...`."""

import sys

from .cli import main

sys.exit(main())
