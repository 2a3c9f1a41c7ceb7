"""Loaded by every Python process whose PYTHONPATH starts with this folder: the suite puts it
there for subprocesses (a qcluster) that must not reach the network either."""

import os

if os.environ.get("WEBHOOKS_TEST_NETGUARD"):
    from tests import netguard

    netguard.install_from_environment()
