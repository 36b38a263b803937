"""tango-edge: cascaded (N-tier) text classification on Intel CPUs with OpenVINO."""

from .cascade import Cascade, Prediction, PredictionStream
from .config import CascadeConfig
from .errors import TangoEdgeError

__all__ = ["Cascade", "CascadeConfig", "Prediction", "PredictionStream", "TangoEdgeError"]
__version__ = "0.1.0"
