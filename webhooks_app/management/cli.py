"""What the ``webhooks_*`` commands share: one-line errors, time arguments, progress."""

from __future__ import annotations

import datetime
import re
import sys
import time
from argparse import ArgumentParser, RawDescriptionHelpFormatter
from typing import Any, NoReturn

from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    DjangoHelpFormatter,
)
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from webhooks_app.models import Webhook

# Exit codes every command uses: 0 fine, 1 the thing checked is not fine, 2 bad usage.
EXIT_PROBLEM = 1
EXIT_USAGE = 2

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def counted(number: int, singular: str, plural: str) -> str:
    """``1 delivery``, ``3 deliveries``: commands print counts that read as English."""
    return f"{number} {singular if number == 1 else plural}"


class UsageError(CommandError):
    def __init__(self, message: str) -> None:
        super().__init__(message, returncode=EXIT_USAGE)


class _OneLineParser(CommandParser):
    """argparse prints the whole usage block before an error; one line is easier to read."""

    def error(self, message: str) -> NoReturn:
        if getattr(self, "called_from_command_line", False):
            sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
            sys.exit(EXIT_USAGE)
        raise UsageError(f"Error: {message}")


class _HelpFormatter(DjangoHelpFormatter, RawDescriptionHelpFormatter):
    """Django's option order, and our help text's examples kept as written."""


class WebhooksCommand(BaseCommand):
    """Base for our commands: argparse errors as one line (exit code 2), readable --help."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # BaseCommand builds a CommandParser itself; swapping the class keeps all it set up.
        parser.__class__ = _OneLineParser
        parser.formatter_class = _HelpFormatter
        return parser

    def add_arguments(self, parser: ArgumentParser) -> None:  # pragma: no cover - overridden
        pass


def parse_duration(text: str) -> datetime.timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``, ``2w``. A bare number is refused: ``--succeeded-age
    30`` meant 30 days to whoever typed it, and 30 seconds to a parser that guessed."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        raise UsageError(f"{text!r} needs a unit: {text}s, {text}m, {text}h, {text}d or {text}w")
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"{text!r} is not a duration (examples: 90s, 15m, 2h, 7d)")
    return datetime.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_when(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """An ISO date or date-time (UTC unless it says otherwise), or a duration meaning
    "that long ago" (``2h``)."""
    now = now or timezone.now()
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is not None:
            moment = datetime.datetime.combine(day, datetime.time())
    if moment is None:
        try:
            return now - parse_duration(text)
        except UsageError:
            if re.fullmatch(r"\s*\d+(\.\d+)?\s*", text):
                raise  # "'30' needs a unit": the likelier slip than a malformed date
            raise UsageError(
                f"{text!r} is not a time (examples: 2026-01-15, 2026-01-15T10:30, 2h, 7d)"
            ) from None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, datetime.UTC)
    return moment


def find_webhook(ref: str) -> Webhook:
    """A webhook by primary key or by exact name."""
    if ref.isdigit():
        found = Webhook.objects.filter(pk=int(ref)).first()
        if found is not None:
            return found
    matches = list(Webhook.objects.filter(name=ref)[:2])
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"more than one webhook is named {ref!r}; use its id")
    raise UsageError(f"no webhook with id or name {ref!r}")


class Progress:
    """A progress line: redrawn in place on a terminal, a line per step otherwise (logs)."""

    def __init__(self, total: int, stream: Any, label: str, every: float = 1.0) -> None:
        # stream: a command's self.stdout (an OutputWrapper, whose write() takes ending=).
        self.total, self.stream, self.label, self.every = total, stream, label, every
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.done = 0
        self.last = 0.0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        finished = done >= self.total
        if not finished and now - self.last < (0.1 if self.tty else self.every):
            return
        self.last = now
        percent = 100 * done / self.total if self.total else 100
        width = 30
        filled = int(width * done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        line = f"{self.label} [{bar}] {done}/{self.total} ({percent:.0f}%)"
        if self.tty:
            self.stream.write("\r" + line, ending="\n" if finished else "")
        else:
            self.stream.write(line)
        self.stream.flush()
