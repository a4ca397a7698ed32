"""The steps both modes run: collect() papers, plan() editions, deliver() digests; previews.

One module per step; this package's names are the pipeline's public API, so callers import
`newsletter.pipeline` and never the modules behind it.
"""

from newsletter.pipeline.collecting import (
    DEMO_DATA,
    CollectReport,
    collect,
    load_demo_day,
    load_papers,
)
from newsletter.pipeline.delivery import MAX_ERROR_CHARS, DeliverReport, deliver
from newsletter.pipeline.digests import RenderError, digest_items
from newsletter.pipeline.editions import EditionCaches
from newsletter.pipeline.planning import (
    PLAN_CHUNK,
    Committed,
    PlanReport,
    Shard,
    plan,
    plan_shards,
    rank_for,
)
from newsletter.pipeline.previews import preview, render_planned
from newsletter.pipeline.progress import Progress
from newsletter.planned import PlannedItem, PlannedRow

__all__ = [
    "DEMO_DATA",
    "MAX_ERROR_CHARS",
    "PLAN_CHUNK",
    "CollectReport",
    "Committed",
    "DeliverReport",
    "EditionCaches",
    "PlanReport",
    "PlannedItem",
    "PlannedRow",
    "Progress",
    "RenderError",
    "Shard",
    "collect",
    "deliver",
    "digest_items",
    "load_demo_day",
    "load_papers",
    "plan",
    "plan_shards",
    "preview",
    "rank_for",
    "render_planned",
]
