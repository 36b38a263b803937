"""TEI's /predict request shapes, validated at the edge, and its error bodies.

`inputs` is a string (one input), a list of two strings (one pair), or a batch: a list of one- or two-element
lists. Answers keep the shape: one input -> a list of {"label", "score"} for every label, highest score first;
a batch -> a list of those, in input order.
"""

from __future__ import annotations

from dataclasses import dataclass


class RequestError(Exception):
    """A request the server refuses: HTTP status, TEI error_type and a message for the client."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def body(self) -> dict:
        return {"error": self.message, "error_type": self.error_type}


@dataclass(frozen=True)
class PredictRequest:
    """A parsed /predict body: the cascade inputs (strings or pairs), whether it was a batch, the options."""

    inputs: list
    batch: bool
    truncate: bool
    raw_scores: bool


def _one_input(item, where: str, pair_task: bool):
    """A batch element ([text] or [first, second]) as a cascade input."""
    if not isinstance(item, list) or not 1 <= len(item) <= 2 or not all(isinstance(x, str) for x in item):
        raise RequestError(422, "validation", f"{where} must be a list of one or two strings")
    if len(item) == 2 and not pair_task:
        raise RequestError(422, "validation", f"{where} is a pair, but this model classifies single texts")
    if len(item) == 1 and pair_task:
        raise RequestError(422, "validation", f"{where} is a single text, but this model classifies pairs")
    return item[0] if len(item) == 1 else (item[0], item[1])


def parse_predict(body, *, pair_task: bool, max_client_batch_size: int) -> PredictRequest:
    """Validate a decoded JSON body (raises RequestError with TEI's status and error_type)."""
    if not isinstance(body, dict) or "inputs" not in body:
        raise RequestError(400, "validation", 'the body must be a JSON object with "inputs"')
    truncate, raw_scores = body.get("truncate", True), body.get("raw_scores", False)
    if not isinstance(truncate, bool) or not isinstance(raw_scores, bool):
        raise RequestError(422, "validation", '"truncate" and "raw_scores" must be true or false')
    inputs = body["inputs"]
    if isinstance(inputs, str):
        if pair_task:
            raise RequestError(422, "validation", "this model classifies pairs: send inputs as [first, second]")
        return PredictRequest([inputs], False, truncate, raw_scores)
    if isinstance(inputs, list) and inputs and all(isinstance(x, str) for x in inputs):
        if len(inputs) != 2:
            raise RequestError(422, "validation", "a list of strings is one pair and must hold two; send a batch as [[text], [text], ...]")
        if not pair_task:
            raise RequestError(422, "validation", "a list of two strings is a pair, but this model classifies single texts; send a batch as [[text], [text]]")
        return PredictRequest([(inputs[0], inputs[1])], False, truncate, raw_scores)
    if isinstance(inputs, list) and inputs:
        if len(inputs) > max_client_batch_size:
            raise RequestError(413, "validation", f"batch size {len(inputs)} > maximum allowed batch size {max_client_batch_size}")
        return PredictRequest([_one_input(item, f"inputs[{k}]", pair_task) for k, item in enumerate(inputs)], True, truncate, raw_scores)
    raise RequestError(422, "validation", '"inputs" must be a string, a pair [first, second], or a batch [[text], ...]')


def label_scores(prediction, labels: list[str], raw_scores: bool) -> list[dict]:
    """Every label with its score (probability, or the raw logit), highest first."""
    values = prediction.logits if raw_scores else prediction.probabilities
    pairs = sorted(zip(labels, values), key=lambda pair: -pair[1])
    return [{"label": label, "score": float(score)} for label, score in pairs]
