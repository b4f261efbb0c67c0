"""The 5 Hz LM planner of ACE-Step 1.5: chain of thought, audio codes, format, simple mode."""

from .planner import LMPlanner, find_lm
from .sampling import LMSampling

__all__ = ["LMPlanner", "LMSampling", "find_lm"]
