"""`tango-edge evaluate`: a cascade's metrics on held-out labelled data at its thresholds, next to each tier alone.

Calibration chooses the thresholds on one labelled set (dev, or MRPC's held-out training pairs), so its figures
on that set flatter the cascade. This runs the real cascade (the runtime's routing, batch sizes and tokenizers)
over another set at the thresholds cascade.json holds, or given ones, and then every tier alone over all of it:
a model card's test figures come from one command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import TangoEdgeError
from .metrics import confusion, confusion_metric_fn
from .profile import machine_summary


def metric_names(primary: str, num_classes: int) -> list[str]:
    """The task's metric first, then the others that apply (binary F1 only for two classes)."""
    applicable = ["accuracy", *(["f1"] if num_classes == 2 else []), "mcc"]
    return [primary, *(name for name in applicable if name != primary)]


def scores(gold: np.ndarray, predicted: np.ndarray, num_classes: int, names: Sequence[str]) -> dict[str, float]:
    """Each named metric of `predicted` against `gold`."""
    counts = confusion(gold, predicted, num_classes)
    return {name: float(confusion_metric_fn(name)(counts)) for name in names}


def evaluate(directory: str | Path, data: str, *, thresholds: Sequence[float] | None = None, device: str = "CPU", progress: Callable[[str], None] | None = None) -> dict:
    """Run the cascade, then each tier alone, over the labelled file `data`; every figure in one dict."""
    from .calibrate import check_metric_fits, load_labelled
    from .cascade import Cascade

    say = progress or (lambda message: None)
    with Cascade.from_dir(directory, thresholds=thresholds, device=device) as cascade:
        config, labels = cascade.config, cascade.labels
        check_metric_fits(config.metric, len(labels))
        texts, gold = load_labelled(data, config, len(labels), purpose="evaluation")
        say(f"the cascade on {len(texts)} inputs at thresholds {config.thresholds} ...")
        answers = cascade.predict(texts)
        bad = next((i for i, a in enumerate(answers) if a.error is not None), None)
        if bad is not None:
            raise TangoEdgeError(f"{data}: data row {bad + 1} cannot be classified ({answers[bad].error}); fix or drop it")
        predicted = np.array([labels.index(a.label) for a in answers], dtype=np.int64)
        answered_by = np.array([a.tier for a in answers], dtype=np.int64)
        names = metric_names(config.metric, len(labels))
        tiers = []
        for index, (tier, tier_config) in enumerate(zip(cascade.tiers, config.tiers)):
            say(f"tier {index + 1} ({tier_config.dir}) alone on {len(texts)} inputs ...")
            alone = tier.logits(tier.encoder.encode(texts), config.batch_size(index)).argmax(-1)
            tiers.append({"tier": index + 1, "dir": tier_config.dir, "metrics": scores(gold, alone, len(labels), names)})
        metrics = scores(gold, predicted, len(labels), names)
        last = tiers[-1]["metrics"][config.metric]
        return {
            "models": str(directory),
            "data": str(data),
            "machine": machine_summary(),
            "instances": len(gold),
            "labels": labels,
            "metric": config.metric,
            "thresholds": list(config.thresholds),
            "tiers": tiers,
            "cascade": {
                "metrics": metrics,
                "share_of_last_tier": metrics[config.metric] / last if last > 0 else None,
                "answered_per_tier": [float(np.mean(answered_by == t["tier"])) for t in tiers],
            },
        }


def format_evaluation(results: dict) -> str:
    names = list(results["cascade"]["metrics"])
    thresholds = ", ".join(f"{t:g}" for t in results["thresholds"])
    lines = [
        f"{results['models']} on {results['data']}: {results['instances']} labelled inputs, thresholds {thresholds}",
        f"{'':<16}" + "".join(f"{name:>10}" for name in names) + "   answered here",
    ]
    answered = results["cascade"]["answered_per_tier"]
    for tier, share in zip(results["tiers"], answered):
        lines.append(f"{'tier ' + str(tier['tier']) + ' alone':<16}" + "".join(f"{100 * tier['metrics'][n]:>9.2f}%" for n in names) + f"   {100 * share:.1f}% in the cascade")
    cascade = results["cascade"]
    lines.append(f"{'cascade':<16}" + "".join(f"{100 * cascade['metrics'][n]:>9.2f}%" for n in names))
    if cascade["share_of_last_tier"] is not None:
        lines.append(f"the cascade keeps {100 * cascade['share_of_last_tier']:.1f}% of the last tier's {results['metric']}")
    return "\n".join(lines)


def evaluate_command(args) -> int:
    results = evaluate(args.models, args.data, thresholds=args.thresholds, device=args.device, progress=lambda m: print(f"evaluate: {m}", file=sys.stderr, flush=True))
    if args.json_out:
        try:
            Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise TangoEdgeError(f"cannot write {args.json_out}: {exc.strerror}") from None
    print(format_evaluation(results))
    return 0
