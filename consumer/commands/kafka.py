"""``eventfleet kafka up|down|status``: the local Apache Kafka, one broker or three (consumer/dev/kafka.py)."""

import argparse
from pathlib import Path

from ..dev import kafka as devkafka
from ..errors import KafkaSetupError


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument(
        "--port", type=int, default=devkafka.DEFAULT_PORT,
        help="broker port; one broker: controller on port+1, SASL_SSL on port+2; "
        "three: brokers on port..port+2, controllers on port+10.., SASL_SSL on port+20..",
    )  # fmt: skip
    p.add_argument("--dir", type=Path, help="broker folder (default: .eventfleet/kafka-PORT)")
    p.add_argument(
        "--brokers", type=int, choices=(1, devkafka.CLUSTER_SIZE), default=None,
        help="1 (the default) or 3: a cluster with replication factor 3 and min.insync.replicas 2",
    )  # fmt: skip
    p.add_argument(
        "--security", choices=devkafka.SECURITY_MODES, default=None,
        help="sasl-ssl: also a SASL_SSL listener (SCRAM-SHA-512, TLS with a local CA); kept for later 'up's",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    home: Path = args.dir or devkafka.default_home(args.port)
    is_cluster = devkafka.Cluster.exists(home)
    if args.action == "up" and args.brokers is not None and (args.brokers > 1) != is_cluster and home.exists():
        kind = "a cluster" if is_cluster else "one broker"
        raise KafkaSetupError(
            f"{home} holds {kind}, not --brokers {args.brokers}: run 'eventfleet kafka down --port {args.port}' and "
            "remove the folder, or use another --port"
        )
    is_cluster = is_cluster or (args.brokers or 1) > 1
    marker = home / "security"
    security = args.security or (marker.read_text().strip() if marker.exists() else "none")
    server: devkafka.Broker | devkafka.Cluster
    if is_cluster:
        server = devkafka.Cluster(home, args.port, security=security)
    else:
        server = devkafka.Broker(home, args.port, security=security)
    if args.action == "up":
        if isinstance(server, devkafka.Cluster):
            started = server.up()
            what = f"started brokers {', '.join(map(str, started))}" if started else "every broker was running"
            print(f"Kafka {devkafka.KAFKA_VERSION} cluster is up at {server.bootstrap} ({what}; folder {home})")
            print("\n".join(server.status()))
        else:
            server.up()
            print(f"Kafka {devkafka.KAFKA_VERSION} is up at {server.bootstrap} (pid {server.pid()}, folder {home})")
        if security != "none":
            marker.write_text(security)
            _print_secure_listener(server)
    elif args.action == "down":
        if isinstance(server, devkafka.Cluster):
            stopped = server.down()
            print(f"stopped brokers {', '.join(map(str, stopped))}" if stopped else f"no broker of ours runs in {home}")
        else:
            print("stopped" if server.down() else f"no broker of ours is running in {server.home}")
    else:
        if isinstance(server, devkafka.Cluster):
            print("\n".join(server.status()))
            return 0 if len(server.running()) == len(server.brokers) else 1
        pid = server.pid()
        up = devkafka.reachable(server.bootstrap, timeout_s=3)
        print(f"broker {server.node_id} {server.bootstrap} pid {pid or '-'} {'running' if up else 'stopped'}")
        return 0 if up else 1
    return 0


def _print_secure_listener(server: devkafka.Broker | devkafka.Cluster) -> None:
    """The SASL_SSL listener, the CA and the credentials, and the pipeline lines that use them."""
    creds = server.credentials()
    print(f"SASL_SSL (SCRAM-SHA-512, TLS) listener: {server.secure_bootstrap}")
    print(f"CA file: {creds.ca_file}")
    print(f"user: {creds.username}  password: {creds.password}")
    print("In the pipeline file:")
    print(
        f'[kafka]\nbootstrap_servers = "{server.secure_bootstrap}"\nauth = "scram-sha-512"\n'
        f'username = "{creds.username}"\npassword = "{creds.password}"\ntls = true\nca_file = "{creds.ca_file}"'
    )
