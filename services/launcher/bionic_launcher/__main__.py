"""Start the whole embedded system: `python -m bionic_launcher` (or `make up`)."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from bionic_common.logs import setup_logging
from bionic_launcher.config import LauncherSettings
from bionic_launcher.stack import Stack, StackError

log = logging.getLogger("bionic_launcher")


def main() -> None:
    settings = LauncherSettings()
    setup_logging("launcher", settings.log_level)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(settings)
    code = 0
    try:
        stack.start()
        base = f"http://{settings.host}:{settings.gateway_port}/v1"
        sys.stdout.write(
            f"\nBionicMemory is up: OpenAI API at {base} (docs at "
            f"http://{settings.host}:{settings.gateway_port}/docs). Ctrl-C stops it.\n\n"
        )
        sys.stdout.flush()
        stack.supervise(stop)
    except StackError as exc:
        log.error("%s", exc)
        code = 1
    finally:
        stack.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
