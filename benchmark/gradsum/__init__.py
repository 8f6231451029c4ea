"""GradSUM: which parts of a driving scene does a model use, class by class?

The pipeline's stages are subpackages: `truthsets` → `models` → `attribution` →
`aggregation` → `evaluation` → `report`; `pipeline` runs them end to end.
"""

from __future__ import annotations

__version__ = "0.1.0"
