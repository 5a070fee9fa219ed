"""The client's tests import the package from this checkout, installed or not."""

from __future__ import annotations

import sys
from pathlib import Path

CLIENT = str(Path(__file__).resolve().parents[1])
if CLIENT not in sys.path:
    sys.path.insert(0, CLIENT)
