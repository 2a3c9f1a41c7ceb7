"""A success-rate line chart as inline SVG, rendered on the server (no JavaScript, no CDN)."""

from __future__ import annotations

import datetime

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from webhooks_app.stats import Activity, Series

PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bc4c00", "#1b7c83", "#57606a"]
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28


def _n(value: float) -> str:
    return f"{value:.1f}"


def success_chart(
    series: list[Series],
    start: datetime.datetime,
    end: datetime.datetime,
    bucket: datetime.timedelta,
) -> SafeString:
    """One line per webhook: share of settled deliveries that succeeded, per bucket."""
    span = max((end - start).total_seconds(), 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(moment: datetime.datetime) -> float:
        return LEFT + plot_w * min(max((moment - start).total_seconds() / span, 0.0), 1.0)

    def y(rate: float) -> float:
        return TOP + plot_h * (1.0 - rate)

    grid = format_html_join(
        "",
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#d0d7de"/>'
        '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#57606a">{}%</text>',
        (
            (LEFT, WIDTH - RIGHT, _n(y(p / 100)), _n(y(p / 100)), LEFT - 4, _n(y(p / 100) + 3), p)
            for p in (0, 50, 100)
        ),
    )
    ticks = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="10" text-anchor="middle" fill="#57606a">{}</text>',
        (
            (_n(x(moment)), HEIGHT - 8, moment.strftime("%d %H:%M"))
            for moment in (start + (end - start) * i / 4 for i in range(5))
        ),
    )
    lines = []
    for index, item in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        points = " ".join(
            f"{x(hour + bucket / 2):.1f},{y(ok / settled):.1f}"
            for hour, ok, settled in item.points
            if settled
        )
        lines.append(
            format_html(
                '<polyline fill="none" stroke="{}" stroke-width="2" points="{}">'
                "<title>{}</title></polyline>",
                colour,
                points,
                item.label,
            )
        )
        if len(item.points) == 1:  # a single hour has no line to draw: mark it
            hour, ok, settled = item.points[0]
            lines.append(
                format_html(
                    '<circle cx="{}" cy="{}" r="3" fill="{}"/>',
                    _n(x(hour + bucket / 2)),
                    _n(y(ok / settled)),
                    colour,
                )
            )
    legend = format_html_join(
        "",
        # admin.css colours webhooks-series-N as PALETTE[N].
        '<li><span class="webhooks-swatch webhooks-swatch-line webhooks-series-{}"></span>{}</li>',
        ((i % len(PALETTE), item.label) for i, item in enumerate(series)),
    )
    return format_html(
        '<svg id="webhooks-success-chart" xmlns="http://www.w3.org/2000/svg" width="{}" '
        'height="{}" viewBox="0 0 {} {}" role="img" aria-label="Success rate per webhook">'
        '{}{}{}</svg><ul class="webhooks-legend">{}</ul>',
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        grid,
        ticks,
        SafeString("".join(lines)),
        legend,
    )


OUTCOME_COLOURS = (("succeeded", "#1a7f37"), ("failed", "#cf222e"), ("retrying", "#bc4c00"))


def activity_chart(buckets: list[Activity], bucket: datetime.timedelta) -> SafeString:
    """One webhook's attempts per bucket as stacked bars (succeeded, failed, retrying) and
    its p50 / p95 latency as two lines on a second axis (ms, right)."""
    plot_w, plot_h = WIDTH - LEFT - 48, HEIGHT - TOP - BOTTOM
    if not buckets:
        return format_html("{}", "")
    most = max(max(b.succeeded + b.failed + b.retrying for b in buckets), 1)
    slowest = max(max((b.p95_ms or 0) for b in buckets), 1)
    width = plot_w / len(buckets)

    def y_count(value: float) -> float:
        return TOP + plot_h * (1.0 - value / most)

    def y_ms(value: float) -> float:
        return TOP + plot_h * (1.0 - value / slowest)

    bars = []
    for index, item in enumerate(buckets):
        base = 0
        for name, colour in OUTCOME_COLOURS:
            count = getattr(item, name)
            if not count:
                continue
            top = y_count(base + count)
            bars.append(
                format_html(
                    '<rect class="webhooks-bar-{}" x="{}" y="{}" width="{}" height="{}" '
                    'fill="{}"><title>{} UTC: {} {}</title></rect>',
                    name,
                    _n(LEFT + index * width + 1),
                    _n(top),
                    _n(max(width - 2, 1)),
                    _n(y_count(base) - top),
                    colour,
                    item.start.strftime("%Y-%m-%d %H:%M"),
                    count,
                    name,
                )
            )
            base += count
    lines = []
    for attribute, colour, dash in (("p50_ms", "#0969da", ""), ("p95_ms", "#8250df", "4 3")):
        points = " ".join(
            f"{LEFT + (index + 0.5) * width:.1f},{y_ms(value):.1f}"
            for index, item in enumerate(buckets)
            if (value := getattr(item, attribute)) is not None
        )
        if points:
            lines.append(
                format_html(
                    '<polyline id="webhooks-latency-{}" fill="none" stroke="{}" '
                    'stroke-width="2" stroke-dasharray="{}" points="{}"/>',
                    attribute.removesuffix("_ms"),
                    colour,
                    dash,
                    points,
                )
            )
    axes = format_html(
        '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#57606a">{}</text>'
        '<text x="{}" y="{}" font-size="10" fill="#57606a">{} ms</text>'
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#d0d7de"/>'
        '<text x="{}" y="{}" font-size="10" fill="#57606a">{}</text>'
        '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#57606a">{}</text>',
        LEFT - 4,
        TOP + 8,
        most,
        LEFT + plot_w + 4,
        TOP + 8,
        slowest,
        LEFT,
        LEFT + plot_w,
        TOP + plot_h,
        TOP + plot_h,
        LEFT,
        HEIGHT - 8,
        buckets[0].start.strftime("%d %H:%M"),
        LEFT + plot_w,
        HEIGHT - 8,
        (buckets[-1].start + bucket).strftime("%d %H:%M"),
    )
    legend = format_html_join(
        "",
        # admin.css colours each key as the bars and lines above.
        '<li><span class="webhooks-swatch webhooks-key-{}"></span>{}</li>',
        [
            *((name, name) for name, _ in OUTCOME_COLOURS),
            ("p50", "p50 latency"),
            ("p95", "p95 latency"),
        ],
    )
    return format_html(
        '<svg id="webhooks-activity-chart" xmlns="http://www.w3.org/2000/svg" width="{}" '
        'height="{}" viewBox="0 0 {} {}" role="img" aria-label="Attempts and latency">'
        '{}{}{}</svg><ul class="webhooks-legend">{}</ul>',
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        axes,
        SafeString("".join(bars)),
        SafeString("".join(lines)),
        legend,
    )
