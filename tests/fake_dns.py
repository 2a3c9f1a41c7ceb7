"""Fake DNS for tests that judge URLs: names under ``.internal`` resolve to 10.0.0.5,
``metadata.test`` to 169.254.169.254, ``v6.test`` to a unique-local IPv6 address, names under
``.invalid`` do not resolve, and every other name to a public documentation address, so no
test ever asks a real resolver. Patch it in with
``monkeypatch.setattr("webhooks_app.targets.resolve", fake_resolve)``."""

from __future__ import annotations

PUBLIC_ADDRESS = "93.184.216.34"


def fake_resolve(host: str, port: int) -> list[str]:
    if host.endswith(".internal"):
        return ["10.0.0.5"]
    if host == "metadata.test":
        return ["169.254.169.254"]
    if host == "v6.test":
        return ["fd00:ec2::254"]
    if host == "mixed.test":
        return [PUBLIC_ADDRESS, "127.0.0.2"]
    if host.endswith(".invalid"):
        raise OSError("Name or service not known")
    return [PUBLIC_ADDRESS]
