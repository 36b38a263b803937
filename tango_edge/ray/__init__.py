"""The cascade as a Ray Data stage (the `[ray]` extra): the same cascade folder on one machine or a cluster.

`CascadePredictor` is the callable class for `Dataset.map_batches` (one Cascade per actor); `classify` adds it
to a dataset with an actor pool; `read_lines` and `classify_file` carry each line's index so a file's answers
come back in input order, as `tango-edge run` writes them.
"""

from .files import FileRun, classify_file, ordered_predictions, predict_file, read_lines
from .pool import ActorPlan, classify, plan_actors
from .predictor import RESULT_COLUMNS, CascadePredictor, prediction_from_row

__all__ = [
    "ActorPlan",
    "CascadePredictor",
    "FileRun",
    "RESULT_COLUMNS",
    "classify",
    "classify_file",
    "ordered_predictions",
    "plan_actors",
    "predict_file",
    "prediction_from_row",
    "read_lines",
]
