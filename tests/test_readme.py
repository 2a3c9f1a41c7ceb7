"""The README's settings snippet runs as pasted and names only settings we know."""

import re
from pathlib import Path

from webhooks_app.checks import ENDPOINT_KEYS
from webhooks_app.conf import DEFAULTS

README = Path(__file__).resolve().parent.parent / "README.md"


def settings_snippet() -> str:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    (snippet,) = [
        block for block in blocks if "WEBHOOKS = {" in block and "INSTALLED_APPS" in block
    ]
    return snippet


def test_the_settings_snippet_runs_as_pasted(monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_" + "A" * 43)
    namespace: dict = {}

    exec(compile(settings_snippet(), "README.md", "exec"), namespace)  # noqa: S102

    assert namespace["INSTALLED_APPS"][0] == "webhooks_app"  # before django.contrib.admin
    assert set(namespace["WEBHOOKS"]) <= set(DEFAULTS)
    for endpoint in namespace["WEBHOOKS"]["ENDPOINTS"]:
        assert set(endpoint) <= ENDPOINT_KEYS
    assert namespace["Q_CLUSTER"]["retry"] > namespace["Q_CLUSTER"]["timeout"]
