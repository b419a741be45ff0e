"""`larpix-daq web`: the web UI for the core at ``--core``."""

from __future__ import annotations

import argparse
import errno
import signal
import socket

from larpixdaq.commands import Command
from larpixdaq.commands.common import add_core_argument, add_keys_argument
from larpixdaq.errors import CommandError


def configure(p: argparse.ArgumentParser) -> None:
    add_core_argument(p)
    add_keys_argument(p, "for a core that demands keys")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port to serve on (0: any free one)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between updates pushed to the page")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from larpixdaq.runcontrol.security import KeysError
    from larpixdaq.web.app import STATIC, create_app

    if not (STATIC / "index.html").is_file():
        raise CommandError(f"the page is missing ({STATIC}/index.html): this installation of "
                           "larpix-daq lacks its static files; reinstall it")
    if args.interval <= 0:
        raise CommandError("--interval must be positive")
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
        sock.listen(128)  # connections made as soon as the banner is out wait in the backlog
    except OSError as exc:
        sock.close()
        hint = " (is another web UI running? choose --port)" if exc.errno == errno.EADDRINUSE \
            else ""
        raise CommandError(f"cannot serve on {args.host}:{args.port}: {exc.strerror}{hint}") \
            from None
    try:
        app = create_app(args.core, interval=args.interval, keys=args.keys)
    except KeysError as exc:
        sock.close()
        raise CommandError(str(exc)) from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    secured = ", CURVE keys" if app.state.daq.keys is not None else ""
    print(f"web UI on http://{shown}:{port}/ for the core at {args.core}{secured}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="auto")
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again under
    # the handlers it found: make those a no-op, so a requested stop exits with status 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    return 0


COMMANDS = [Command("web", "serve the web UI (run control, monitor, configuration)",
                    configure, run)]
