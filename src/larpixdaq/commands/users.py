"""`larpix-daq users` (who may do what) and `larpix-daq audit` (who did what).

``users`` works on the run database file directly, not through the core: whoever can write
that file already controls the DAQ, and a site needs a way in before any user exists. The
core reads the user tables for every new credential, so a change takes effect at once, with
no restart. ``audit`` asks the core (a viewer may read it) or reads ``--db``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from larpixdaq.commands import Command
from larpixdaq.commands.common import (
    RUNS_DB_NAME,
    add_client_arguments,
    connect_operator,
    final_reply,
)
from larpixdaq.errors import CommandError

#: The database `larpix-daq up` uses with its default --data-dir.
UP_DB = Path("data") / RUNS_DB_NAME


def _db_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=os.environ.get("LARPIX_DAQ_DB", str(UP_DB)),
                   help=f"run database file (default: $LARPIX_DAQ_DB or {UP_DB}, the one "
                        "`larpix-daq up` keeps in its data directory)")


def configure_users(p: argparse.ArgumentParser) -> None:
    from larpixdaq.runcontrol.policy import ROLE_NAMES

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="create a user and print its token (shown once)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLE_NAMES, default="viewer")
    add.add_argument("--expires-days", type=float, default=None,
                     help="the token stops working after this many days (default: never)")
    sub.add_parser("list", help="the users, their roles and how many tokens each has")
    rm = sub.add_parser("remove", help="delete a user and all its tokens")
    rm.add_argument("name")
    sr = sub.add_parser("set-role", help="change a user's role")
    sr.add_argument("name")
    sr.add_argument("role", choices=ROLE_NAMES)
    tk = sub.add_parser("token", help="give a user another token (printed once)")
    tk.add_argument("name")
    tk.add_argument("--expires-days", type=float, default=None)
    tk.add_argument("--revoke", action="store_true", help="revoke the user's other tokens")
    for sp in (add, rm, sr, tk, sub.choices["list"]):
        _db_argument(sp)


def run_users(args: argparse.Namespace) -> int:
    from larpixdaq.runcontrol.policy import Role
    from larpixdaq.runcontrol.users import UserError, UserStore

    if args.action != "add" and not Path(args.db).exists():
        raise CommandError(f"no run database at {args.db}; give --db")
    try:
        with UserStore(args.db) as store:
            if args.action == "add":
                expires = args.expires_days * 86400 if args.expires_days else None
                token = store.add_user(args.name, Role.parse(args.role), expires_s=expires)
                print(f"user {args.name} ({args.role}) added; token (shown only now):")
                print(token)
            elif args.action == "list":
                print(f"{'user':<20} {'role':<9} {'tokens':>6}  created")
                for u in store.list_users():
                    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(u.created))
                    print(f"{u.name:<20} {u.role!s:<9} {u.tokens:>6}  {created}")
            elif args.action == "remove":
                store.remove_user(args.name)
                print(f"user {args.name} removed (its tokens no longer work)")
            elif args.action == "set-role":
                store.set_role(args.name, Role.parse(args.role))
                print(f"user {args.name} is now {args.role}")
            elif args.action == "token":
                revoked = store.revoke_tokens(args.name) if args.revoke else 0
                expires = args.expires_days * 86400 if args.expires_days else None
                token = store.new_token(args.name, expires_s=expires)
                if revoked:
                    print(f"{revoked} earlier token(s) of {args.name} revoked")
                print(f"new token of {args.name} (shown only now):")
                print(token)
    except UserError as exc:
        raise CommandError(str(exc)) from None
    return 0


def configure_audit(p: argparse.ArgumentParser) -> None:
    add_client_arguments(p)
    p.add_argument("--db", default=None,
                   help="read this run database file directly instead of asking the core")
    p.add_argument("--limit", type=int, default=50, help="the most recent N entries")
    p.add_argument("--user", default=None, help="only this user's requests")
    p.add_argument("--refused", action="store_true", help="only refused requests")
    p.add_argument("--json", action="store_true")


def run_audit(args: argparse.Namespace) -> int:
    if args.db:
        from larpixdaq.runcontrol.rundb import RunDatabase, RunDatabaseError

        if not Path(args.db).exists():
            raise CommandError(f"no run database at {args.db}")
        try:
            db = RunDatabase(args.db)
        except RunDatabaseError as exc:
            raise CommandError(str(exc)) from None
        entries = db.list_audit(args.limit, args.user, args.refused)
        db.close()
    else:
        params = {"limit": args.limit, "refused": args.refused}
        if args.user:
            params["user"] = args.user
        with connect_operator(args) as op:
            entries = final_reply(op.request("audit", params)).data["entries"]
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return 0
    for e in reversed(entries):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))
        who = f"{e['user'] or 'anonymous'}({e['role'] or '-'})"
        params = json.dumps(e["params"], sort_keys=True) if e["params"] else ""
        message = f"  {e['message']}" if e["message"] else ""
        print(f"{when}  {who:<22} {e['result']:<8} {e['command']} {params}{message}")
    return 0


COMMANDS = [
    Command("users", "add, list, remove users, set their roles, give them tokens",
            configure_users, run_users),
    Command("audit", "who asked the core for what, when, and what came of it",
            configure_audit, run_audit),
]
