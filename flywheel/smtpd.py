"""A local SMTP server on loopback that keeps every message it receives (Maildir, one .eml each).

The embedded stand-in for Mailpit: `python -m flywheel.smtpd --port 8025 --dir .flywheel/mail`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path


def serve(port: int, mail_dir: Path, host: str = "127.0.0.1") -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox

    for sub in ("tmp", "new", "cur"):
        (mail_dir / sub).mkdir(parents=True, exist_ok=True)
    controller = Controller(Mailbox(mail_dir), hostname=host, port=port)
    controller.start()
    logging.info("SMTP server on %s:%d storing mail in %s", host, port, mail_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    serve(args.port, args.dir, args.host)


if __name__ == "__main__":
    main()
