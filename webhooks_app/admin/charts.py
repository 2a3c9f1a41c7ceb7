"""A success-rate line chart as inline SVG, rendered on the server (no JavaScript, no CDN)."""

from __future__ import annotations

import datetime

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from webhooks_app.stats import Series

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
        '<li style="list-style:none;display:inline-block;margin-right:16px">'
        '<span style="display:inline-block;width:12px;height:3px;background:{};'
        'vertical-align:middle;margin-right:4px"></span>{}</li>',
        ((PALETTE[i % len(PALETTE)], item.label) for i, item in enumerate(series)),
    )
    return format_html(
        '<svg id="webhooks-success-chart" xmlns="http://www.w3.org/2000/svg" width="{}" '
        'height="{}" viewBox="0 0 {} {}" role="img" aria-label="Success rate per webhook">'
        "{}{}{}</svg><ul style='padding:0;margin:4px 0 0'>{}</ul>",
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        grid,
        ticks,
        SafeString("".join(lines)),
        legend,
    )
