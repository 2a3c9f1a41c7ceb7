"""Run the demo: the web server and a django-q2 cluster, stopped together.

``make demo`` runs this after ``migrate`` and ``demo_setup``. Ctrl-C (or SIGTERM) stops both
children and exits 0; if either child dies on its own, the other is stopped and the exit status
is non-zero, so a broken demo never looks like it is still running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

REPO_DIR = Path(__file__).resolve().parent.parent
MANAGE = str(REPO_DIR / "manage.py")
# qcluster stops gracefully once every worker finished its task; a delivery run stops
# claiming after WEBHOOKS["TASK_SECONDS"] and then waits for its last requests. Killing it
# sooner is safe: what it held is leased in the database and picked up when the lease ends.
GRACE_SECONDS = 5.0


def start(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")
    # A session of its own: Ctrl-C in the terminal reaches only this script, which then stops
    # the children in order, and qcluster's worker processes can be killed as one group.
    return subprocess.Popen(  # noqa: S603 - fixed argv built from our own paths
        [sys.executable, MANAGE, *args], cwd=REPO_DIR, env=env, start_new_session=True
    )


def stop(name: str, process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child, then SIGKILL its whole process group if it has not gone in time."""
    if process.poll() is None:
        print(f"Stopping {name} (pid {process.pid})...", flush=True)
        process.terminate()
        try:
            process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in {GRACE_SECONDS:.0f}s; killing it.", flush=True)
    # Also after a clean exit: a qcluster worker orphaned by its parent is still in the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:``port``. Checked before anything
    starts: the demo's endpoints point at this port, so a cluster started next to another
    program on it would send the demo's deliveries (and retries) to that program."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def main() -> int:
    port = os.environ.get("WEBHOOKS_DEMO_PORT", "8000")
    if not port.isdigit() or not 0 < int(port) < 65536:
        print(f"WEBHOOKS_DEMO_PORT must be a port number, got {port!r}.", file=sys.stderr)
        return 2
    if port_in_use(int(port)):
        print(
            f"Port {port} is in use by another program; stop it, or run the demo on another "
            f"port: WEBHOOKS_DEMO_PORT=8001 make demo",
            file=sys.stderr,
        )
        return 1
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    children = {
        "runserver": start("runserver", f"127.0.0.1:{port}", "--noreload"),
        "qcluster": start("qcluster"),
    }
    base = f"http://127.0.0.1:{port}"
    print(
        f"\nDemo running (Ctrl-C to stop):\n"
        f"  {base}/            what to do\n"
        f"  {base}/admin/      admin / admin (demo only)\n"
        f"  {base}/receiver/   what the receiver got\n",
        flush=True,
    )

    exit_code = 0
    while not stopping:
        died = {name: p.returncode for name, p in children.items() if p.poll() is not None}
        if died:
            name, code = next(iter(died.items()))
            print(f"{name} exited with status {code}; stopping the demo.", file=sys.stderr)
            exit_code = code or 1
            break
        time.sleep(0.3)

    for name, process in children.items():
        stop(name, process)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
