"""``eventfleet registry up|down|status``: the local schema registry, Apicurio (consumer/dev/registry.py)."""

import argparse
from pathlib import Path

from ..dev import registry as devregistry


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--port", type=int, default=devregistry.DEFAULT_PORT, help="API port")
    p.add_argument("--management-port", type=int, default=0, help="health checks' port (default: port+1000)")
    p.add_argument("--dir", type=Path, help="registry folder (default: .eventfleet/registry-PORT)")


def main(args: argparse.Namespace) -> int:
    registry = devregistry.Registry(args.dir or devregistry.default_home(args.port), args.port, args.management_port)
    if args.action == "up":
        state = "is up" if registry.up() else "was already running"
        where = f"(pid {registry.pid()}, folder {registry.home})"
        print(f"Apicurio Registry {devregistry.APICURIO_VERSION} {state} at {registry.url} {where}")
    elif args.action == "down":
        print("stopped" if registry.down() else f"no registry of ours is running in {registry.home}")
    else:
        pid, up = registry.pid(), registry.answers()
        if pid is not None:
            print(f"{'running' if up else 'starting'}: {registry.url} (pid {pid}, folder {registry.home})")
        elif up:
            print(f"running: {registry.url} answers, but not a registry of ours (none runs in {registry.home})")
        else:
            print(f"stopped: nothing answers at {registry.url} (folder {registry.home})")
        return 0 if up else 1
    return 0
