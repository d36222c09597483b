import os
import sys
from pathlib import Path

import pytest

# Tests import the card's modules and the songweave package from the checkout, as users do, and
# the shared helpers (tests/helpers.py) as `from helpers import ...`.
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(ROOT))

from helpers import make_tiny_dataset  # noqa: E402

# Two cores on CI: keep intra-op threads from oversubscribing when DDP tests spawn workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny dataset of 8 train and 4 val pairs, one per test module."""
    return make_tiny_dataset(tmp_path_factory.mktemp("data"))
