"""Server-side SVG charts of the dashboard: stacked bars per day, readable without JavaScript."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from markupsafe import Markup, escape

from newsletter.models import ACTIVE, PENDING, UNSUBSCRIBED

# Colour-blind-safe (Okabe-Ito); a series keeps its colour on every chart.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#999999")
FIXED = {
    "sent": "#009E73",
    "active": "#009E73",
    "planned": "#56B4E9",
    "pending": "#56B4E9",
    "sending": "#0072B2",
    "retry": "#E69F00",
    "paused": "#E69F00",
    "failed": "#D55E00",
    "bouncing": "#D55E00",
    "skipped": "#999999",
    "unsubscribed": "#999999",
}
_SMALL = 'font-size="11" fill="currentColor"'
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 220, 44, 28, 10


@dataclass(frozen=True)
class Chart:
    """Counts per day and series; `table` rows repeat them for those who would rather read."""

    id: str
    title: str
    description: str
    days: list[date]
    series: list[str]
    counts: dict[tuple[date, str], int]

    def total(self, day: date) -> int:
        return sum(self.counts.get((day, name), 0) for name in self.series)

    def table(self) -> list[tuple[date, list[int]]]:
        return [(day, [self.counts.get((day, s), 0) for s in self.series]) for day in self.days]

    def colour(self, name: str) -> str:
        return FIXED.get(name) or PALETTE[self.series.index(name) % len(PALETTE)]


def chart_of(
    id: str,
    title: str,
    description: str,
    rows: Iterable[tuple[Any, str, int]],
    order: Sequence[str] = (),
) -> Chart:
    """A chart of (day, series, count) rows; the days are those of the rows, oldest first."""
    counts: dict[tuple[date, str], int] = defaultdict(int)
    for day, name, count in rows:
        if day is None:
            continue
        counts[(_day(day), name)] += int(count)
    present = {name for _, name in counts}
    series = [s for s in order if s in present] + sorted(present - set(order))
    return Chart(id, title, description, _axis({day for day, _ in counts}), series, dict(counts))


def _axis(days: set[date], longest: int = 62) -> list[date]:
    """Every day from the first to the last, so that a gap shows as one; only the days with
    data when they are spread over more than `longest` days."""
    if not days:
        return []
    first, last = min(days), max(days)
    if (last - first).days >= longest:
        return sorted(days)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def subscribers_over_time(
    history: Iterable[tuple[str, Any, Any, Any, int]], today: date, days: int = 30
) -> list[tuple[date, str, int]]:
    """(day, state, count) at the end of each of the last `days` days.

    Reconstructed from the sign-up, confirmation and unsubscribe times: a subscriber is
    pending from sign-up, then in their current state (active, paused, bouncing) from
    confirmation, and unsubscribed from their unsubscribe. Pauses and bounces have no date,
    so they show from the confirmation on.
    """
    rows: list[tuple[date, str, int]] = []
    history = [
        (state, _day(a), b and _day(b), c and _day(c), n) for state, a, b, c, n in history if a
    ]
    for offset in range(days - 1, -1, -1):
        day = today - timedelta(days=offset)
        found: dict[str, int] = defaultdict(int)
        for state, created, confirmed, left, count in history:
            if created > day:
                continue
            if state == UNSUBSCRIBED and left and left <= day:
                found[UNSUBSCRIBED] += count
            elif confirmed and confirmed <= day:
                found[ACTIVE if state in (PENDING, UNSUBSCRIBED) else state] += count
            else:
                found[PENDING] += count
        rows.extend((day, state, count) for state, count in found.items())
    return rows


def svg(chart: Chart) -> Markup:
    """The chart as inline SVG: one <rect> per (day, series) with its count in data-* and a
    <title> (a tooltip, and what a screen reader reads), a legend, and the axis maximum."""
    title_id, desc_id = f"{chart.id}-title", f"{chart.id}-desc"
    parts = [
        f'<svg class="chart" id="{chart.id}" viewBox="0 0 {WIDTH} {HEIGHT + 24}" role="img" '
        f'aria-labelledby="{title_id} {desc_id}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{title_id}">{escape(chart.title)}</title>',
        f'<desc id="{desc_id}">{escape(chart.description)}</desc>',
    ]
    if not chart.days:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">No data yet</text>'
        )
        return Markup("".join(parts) + "</svg>")
    top = max(chart.total(day) for day in chart.days) or 1
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot = plot_w / len(chart.days)
    bar = min(max(1.0, slot * 0.8), 48.0)  # one day alone is a bar, not a wall
    parts.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 8}" y2="{TOP + plot_h}" '
        'stroke="currentColor"/>'
    )
    parts.append(f'<text x="{LEFT - 4}" y="{TOP + 8}" {_SMALL} text-anchor="end">{top}</text>')
    parts.append(f'<text x="{LEFT - 4}" y="{TOP + plot_h}" {_SMALL} text-anchor="end">0</text>')
    label_every = max(1, len(chart.days) // 8)
    for index, day in enumerate(chart.days):
        x = LEFT + index * slot + (slot - bar) / 2
        y = float(TOP + plot_h)
        for name in chart.series:
            value = chart.counts.get((day, name), 0)
            if not value:
                continue
            height = plot_h * value / top
            y -= height
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{chart.colour(name)}" data-day="{day.isoformat()}" '
                f'data-series="{escape(name)}" data-value="{value}">'
                f"<title>{day.isoformat()}, {escape(name)}: {value}</title></rect>"
            )
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle" '
                f'font-size="10" fill="currentColor">{day:%m-%d}</text>'
            )
    x = LEFT
    for name in chart.series:
        parts.append(
            f'<rect class="legend" x="{x}" y="{HEIGHT + 8}" width="10" height="10" '
            f'fill="{chart.colour(name)}"/>'
            f'<text x="{x + 14}" y="{HEIGHT + 17}" {_SMALL}>{escape(name)}</text>'
        )
        x += 24 + 7 * len(name)
    return Markup("".join(parts) + "</svg>")
