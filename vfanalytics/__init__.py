"""vfanalytics: a workbench for Prometheus- and Loki-monitored platforms."""

from __future__ import annotations

from vfanalytics.exceptions import VfaError
from vfanalytics.store import Store

__version__ = "0.1.0"
__all__ = ["Store", "VfaError", "__version__"]
