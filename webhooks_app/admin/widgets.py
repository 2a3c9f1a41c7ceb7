"""Form fields for a webhook's lists and headers: choices and rows instead of raw JSON.

Only the shape is handled here (lists of names, a name -> value dict); whether a value is
allowed is the rules' business (Webhook.clean calls rules.py), so the admin refuses what the
API refuses with the same messages.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.forms.renderers import BaseRenderer
from django.utils.safestring import SafeString

from webhooks_app import registry

# Rows of empty inputs offered after the existing headers.
SPARE_HEADER_ROWS = 3


def event_choices(current: list[str] | None = None) -> list[tuple[str, str]]:
    """The catalogue with its descriptions, the wildcards it allows (``*``, ``user.*``), and
    whatever the webhook already has (a pattern made through the API stays selectable)."""
    catalogue = registry.event_catalogue()
    choices: list[tuple[str, str]] = [("*", "* (every event)")]
    prefixes = sorted({name.rsplit(".", 1)[0] for name in catalogue if "." in name})
    choices += [(f"{prefix}.*", f"{prefix}.* (every {prefix} event)") for prefix in prefixes]
    choices += [(name, f"{name}: {text}" if text else name) for name, text in catalogue.items()]
    known = {value for value, _ in choices}
    choices += [(value, value) for value in current or [] if value not in known]
    return choices


def model_choices(current: list[str] | None = None) -> list[tuple[str, str]]:
    names = sorted(registry.watched_model_names())
    if any(name.startswith("user.") for name in registry.event_catalogue()):
        names.append("user")
    names += [value for value in current or [] if value not in names]
    return [(name, name) for name in names]


class NameListField(forms.MultipleChoiceField):
    """A JSON list of names, chosen from the choices; nothing chosen is ``[]`` (all)."""

    def prepare_value(self, value: Any) -> Any:
        return list(value or [])

    def clean(self, value: Any) -> list[str]:
        return list(super().clean(value) or [])


class HeaderRowsWidget(forms.Widget):
    """One row of name and value inputs per header, and a few empty rows to add more."""

    template_name = "admin/webhooks_app/webhook/header_rows.html"

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        rows = list((value or {}).items()) if isinstance(value, dict) else list(value or [])
        context["rows"] = rows + [("", "")] * SPARE_HEADER_ROWS
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> list[tuple[str, str]]:
        names = data.getlist(f"{name}_name") if hasattr(data, "getlist") else []
        values = data.getlist(f"{name}_value") if hasattr(data, "getlist") else []
        return [(str(key), str(val)) for key, val in zip(names, values, strict=False)]

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return f"{name}_name" not in data

    def render(
        self,
        name: str,
        value: Any,
        attrs: dict[str, Any] | None = None,
        renderer: BaseRenderer | None = None,
    ) -> SafeString:
        return super().render(name, value, attrs, renderer)


class HeadersField(forms.Field):
    """Custom headers as rows; a row with neither name nor value is ignored."""

    widget = HeaderRowsWidget

    def to_python(self, value: Any) -> dict[str, str]:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        headers: dict[str, str] = {}
        for key, val in value or []:
            key, val = key.strip(), val.strip()
            if not key and not val:
                continue
            if not key:
                raise forms.ValidationError(f"A header with the value {val!r} needs a name.")
            if key.lower() in (existing.lower() for existing in headers):
                raise forms.ValidationError(f"The header {key!r} is given twice.")
            headers[key] = val
        return headers

    def prepare_value(self, value: Any) -> Any:
        return value
