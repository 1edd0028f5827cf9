"""``eventfleet postgres up|down|status``: the local PostgreSQL (consumer/dev/postgres.py)."""

import argparse
from pathlib import Path

from ..dev import postgres as devpostgres


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--port", type=int, default=devpostgres.DEFAULT_PORT, help="server port")
    p.add_argument("--dir", type=Path, help="cluster folder (default: .eventfleet/postgres-PORT)")


def main(args: argparse.Namespace) -> int:
    server = devpostgres.Server(args.dir or devpostgres.default_home(args.port), args.port)
    if args.action == "up":
        server.up()
        print(f'PostgreSQL is up: dsn = "{server.dsn}" (folder {server.home})')
    elif args.action == "down":
        print("stopped" if server.down() else f"no server of ours is running in {server.home}")
    else:
        up = server.running()
        print(f"{server.dsn}: {'running' if up else 'not running'} (folder {server.home})")
        return 0 if up else 1
    return 0
