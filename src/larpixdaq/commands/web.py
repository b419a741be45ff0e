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
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a name people use to reach this server (repeatable); requests for "
                        "any other Host are refused (403). Loopback names and --host are "
                        "always allowed")
    p.add_argument("--require-login", action="store_true",
                   help="nothing but the login page without logging in (default: anonymous "
                        "visitors see the page as viewers)")
    p.add_argument("--session-hours", type=float, default=12.0,
                   help="a login lasts this long (default 12)")
    p.add_argument("--session-idle-minutes", type=float, default=120.0,
                   help="a login ends after this long unused (default 120)")
    p.add_argument("--max-body-kb", type=int, default=1024,
                   help="largest request body accepted (default 1024 kB; larger: 413)")
    p.add_argument("--poll-token-file", default=None,
                   help="token file of a viewer the page's updates are read as, for a core "
                        "that requires a login (default: anonymous)")


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
    poll = None
    if args.poll_token_file:
        from pathlib import Path

        from larpixdaq.runcontrol.credentials import read_token_file

        poll = read_token_file(Path(args.poll_token_file))
        if poll is None:
            sock.close()
            raise CommandError(f"{args.poll_token_file} is not a token file (JSON with user "
                               "and token)")
    if min(args.session_hours, args.session_idle_minutes, args.max_body_kb) <= 0:
        sock.close()
        raise CommandError("--session-hours, --session-idle-minutes and --max-body-kb must "
                           "be positive")
    try:
        app = create_app(args.core, interval=args.interval, keys=args.keys,
                         bind_host=args.host, hosts=args.allowed_host,
                         require_login=args.require_login,
                         session_ttl=args.session_hours * 3600,
                         session_idle=args.session_idle_minutes * 60,
                         max_body=args.max_body_kb * 1024, poll_credential=poll)
    except KeysError as exc:
        sock.close()
        raise CommandError(str(exc)) from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    secured = ", CURVE keys" if app.state.daq.keys is not None else ""
    secured += ", login required" if args.require_login else ""
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
