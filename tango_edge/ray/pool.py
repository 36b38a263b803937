"""Connecting to Ray and sizing the actor pool that runs CascadePredictor."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import TangoEdgeError
from .predictor import CascadePredictor


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise TangoEdgeError('Ray is not installed: pip install "tango-edge[ray]" (or pip install -e ".[ray]" in a checkout)') from None
    return ray


def connect(address: str | None = None) -> bool:
    """Join the cluster at `address` (None: start a local Ray instance on this machine's cores), unless this
    process already joined one. True if this call started the connection (the caller then shuts it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise TangoEdgeError(f"cannot reach Ray at {address}: {exc}") from None
    ray.data.DataContext.get_current().enable_progress_bars = False
    # stderr is for tango-edge's own summary: no per-dataset execution plans, no notice that bars are off
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    return True


@dataclass(frozen=True)
class ActorPlan:
    actors: int
    cpus_per_actor: int


def plan_actors(actors: int | None = None, cpus_per_actor: int | None = None) -> ActorPlan:
    """Fill in what is not given from the connected cluster.

    By default one actor per node with all of the smallest node's cores: `tango-edge autotune` tunes one process
    that uses the whole machine, so that is the process whose batch sizes and streams the profile holds. With
    only `actors` given, the cluster's cores are shared out among them.
    """
    ray = require_ray()
    node_cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    node_cpus = [n for n in node_cpus if n > 0] or [os.cpu_count() or 1]
    if cpus_per_actor is None:
        cpus_per_actor = max(1, sum(node_cpus) // actors) if actors else min(node_cpus)
        cpus_per_actor = min(cpus_per_actor, max(node_cpus))  # an actor lives on one node
    if actors is None:
        actors = max(1, sum(n // cpus_per_actor for n in node_cpus))
    if actors < 1 or cpus_per_actor < 1:
        raise TangoEdgeError(f"need at least one actor and one CPU per actor (got {actors} actors, {cpus_per_actor} CPUs each)")
    # Ray would wait forever for actors that fit nowhere: refuse them instead.
    room = sum(n // cpus_per_actor for n in node_cpus)
    if actors > room:
        raise TangoEdgeError(f"the cluster's nodes ({', '.join(f'{n} CPUs' for n in node_cpus)}) hold at most {room} actors of {cpus_per_actor} CPUs; asked for {actors}")
    return ActorPlan(actors, cpus_per_actor)


def classify(
    dataset,
    models: str | Path,
    *,
    text_column: str = "text",
    pair_column: str | None = None,
    plan: ActorPlan | None = None,
    batch_size: int | None = None,
    predictor_class: type = CascadePredictor,
    **cascade_kwargs,
):
    """`dataset` with RESULT_COLUMNS added by a pool of CascadePredictor actors (lazy, like any Ray Data step).

    `predictor_class` may be a subclass that, say, cleans texts before calling the cascade.

    Actors that die are restarted and their batches retried: Ray Data's actor pools default to unlimited
    `max_restarts` and `max_task_retries` (tested by killing an actor mid-run), so a lost worker costs time,
    not rows. `batch_size` None hands each actor whole blocks.
    """
    ray = require_ray()
    plan = plan or plan_actors()
    return dataset.map_batches(
        predictor_class,
        fn_constructor_kwargs={"models": str(Path(models).resolve()), "text_column": text_column, "pair_column": pair_column, "threads": plan.cpus_per_actor, **cascade_kwargs},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.cpus_per_actor,
    )
