import os
import sys
from pathlib import Path

# Tests import the card's modules and the songweave package from the checkout, as users do.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Two cores on CI: keep intra-op threads from oversubscribing when DDP tests spawn workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
