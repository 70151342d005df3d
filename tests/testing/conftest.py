"""The fault models are imported by their `python "fault_models:..."` bindings from this folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
