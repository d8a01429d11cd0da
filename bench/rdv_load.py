"""The rendezvous load test (not in CI): N simulated nodes against 1 or several servers on one
Redis, all on this machine.

    python -m bench.rdv_load --servers 1 --nodes-per-server 10000
    python -m bench.rdv_load --servers 3 --nodes-per-server 6000

It starts a throw-away `redis-server`, S `python -m rendezvous.server --store redis://...`
processes sharing one key (each with its `--server-id`), and one process of sans-IO clients
(`bench.rdv_fleet`: the real client, the real wire protocol, one UDP socket and loopback
address per node), node i in network i // NETWORK_SIZE, registered first at server i % S with
the others as fallbacks, so a network spans the servers and introductions cross them through
Redis pub/sub. Phases:

1. **ramp**: every node registers (`start()`), at `--rate` per server per second (default: the
   nodes spread over `RAMP_INTERVALS` refresh intervals, so that afterwards the refreshes are
   spread evenly over the interval, as in a fleet that has been up for a while) and never
   more than `--window` per server waiting for their answer (a closed loop: a slower server
   slows the ramp down instead of being flooded). Timed from `start()` to `Registered`.
2. **steady** (`--seconds`): every node refreshes on its own every `--refresh` seconds (the
   issue's 25 s; the product's client refreshes every 20), and `--probe-rate` nodes per server
   per second register anew. Refreshes are timed from the REGISTER the client's timer sends to
   its answer; this is the steady registration latency the issue's goal is about.
3. **introductions** (`--seconds`): `--outstanding` CONNECTs per server in flight at all times
   (closed loop: this measures the most the servers do, and by Little's law latency is
   outstanding / rate), each from a random node to a random other member of its network,
   timed from `request_connect` to our `Introduced`. Refreshes go on meanwhile.

What each figure means (one JSON line per phase, all in `bench/results/rdv_load_<S>.json`):

- per op (`register`, `refresh`, `connect`): `done` answered in the phase, `per_s_per_server`,
  `p50_ms`/`p99_ms`/`max_ms` from the op's start to its answer (so a lost datagram shows as
  the client's retransmission delay, 1, 2, 4 ... s: the latency a node sees), `retried` ops
  answered only after more than one transmission, `transmissions_per_op`, `waiting_at_end`
  ops still unanswered when the phase ended;
- `server_socket_drops`: datagrams the kernel dropped at each server's main port because its
  receive buffer was full (/proc/net/udp), the cause of retries on this machine;
- `server_cpu` (share of one core) and `server_rss_mib` per server, `redis_cpu`, `loadgen_cpu`
  (this process: past about one core it, not the servers, would be the limit), Redis commands
  (Redis' `total_commands_processed`, which counts the commands inside Lua scripts too),
  `load_average` (the machine is shared), `cookie_requests`, `moves` (nodes that gave up on
  their server for another: `ServerChanged`), `refused`;
- `introductions_per_server_cpu_second` and `requests_per_server_cpu_second` (introductions and
  refreshes): answers over the servers' summed CPU seconds, the figures that tell whether
  servers scale when the machine has fewer cores than servers;
- `redis_round_trips`: the round trips the registry makes (`RedisStore.round_trips`, the
  servers' own code run once in this process) for a first registration into a network of
  NETWORK_SIZE, a refresh, and an introduction.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.paths.base import free_port, free_rendezvous_port
from bench.rdv_fleet import OPS, Fleet
from tunnel.session.crypto import public_key

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NETWORK_SIZE = 10  # nodes per network: a team; each join is announced to the other nine
# The ramp lasts this many refresh intervals by default: its registrations are then spread
# evenly over the interval, as refreshes are in a fleet that has been up for a while.
RAMP_INTERVALS = 2
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


class Deployment:
    """redis-server and S rendezvous server processes in a temporary directory."""

    def __init__(self, servers: int, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (Debian: apt-get install "
                             "redis-server)")
        self.redis_port = free_port()  # Redis listens on TCP
        self.redis = subprocess.Popen(
            [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir",
             str(workdir), "--save", "", "--appendonly", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.admin = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                self.admin.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        private = os.urandom(32)
        self.key = public_key(private)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.addrs: list[tuple[str, int]] = []
        for i in range(servers):
            state = workdir / f"s{i + 1}"
            state.mkdir()
            keyfile = state / "rendezvous.key"
            keyfile.write_bytes(base64.b64encode(private) + b"\n")
            keyfile.chmod(0o600)
            port = free_rendezvous_port()
            log = (workdir / f"s{i + 1}.log").open("wb")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "rendezvous.server", "--listen", f"127.0.0.1:{port}",
                 "--db", str(state / "rdv.db"), "--store", self.url, "--server-id",
                 f"s{i + 1}", "--max-members", "510"], cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT))
            self.addrs.append(("127.0.0.1", port))
        time.sleep(1.5)  # imported, listening and subscribed

    def commands(self) -> int:
        return int(self.admin.info("stats")["total_commands_processed"])

    def close(self) -> None:
        for proc in [*self.procs, self.redis]:
            proc.kill()
            proc.wait()
        self.admin.close()


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped at the socket bound to 127.0.0.1:`port` because its receive
    buffer was full (the last column of /proc/net/udp)."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local:
            return int(fields[12])
    return 0


class Meter:
    """CPU of each server, of Redis and of this process, the servers' socket drops, and Redis
    commands, over one phase."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.t = time.monotonic()
        self.cpu = [cpu_seconds(p.pid) for p in dep.procs]
        self.redis_cpu = cpu_seconds(dep.redis.pid)
        self.drops = [udp_drops(port) for _, port in dep.addrs]
        self.own = time.process_time()
        self.cmds = dep.commands()

    def read(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t
        return {
            "seconds": round(wall, 2),
            "server_cpu": [round((cpu_seconds(p.pid) - c) / wall, 3)
                           for p, c in zip(self.dep.procs, self.cpu, strict=True)],
            "server_rss_mib": [round(rss_mib(p.pid), 1) for p in self.dep.procs],
            "server_socket_drops": [udp_drops(port) - d for (_, port), d
                                    in zip(self.dep.addrs, self.drops, strict=True)],
            "redis_cpu": round((cpu_seconds(self.dep.redis.pid) - self.redis_cpu) / wall, 3),
            "loadgen_cpu": round((time.process_time() - self.own) / wall, 3),
            "redis_commands": self.dep.commands() - self.cmds,
            "load_average": os.getloadavg()[0],
        }


def round_trips(url: str) -> dict[str, float]:
    """Redis round trips the registry makes (`RedisStore.round_trips`, the servers' own code in
    this process) for a first registration into a network of NETWORK_SIZE, a refresh, and an
    introduction. Redis' own command count would include the commands inside Lua scripts."""
    from rendezvous.redisstore import PREFIX, RedisStore
    from rendezvous.registry import Registry
    from tunnel.path import rendezvous as rc

    store = RedisStore(url, prefix=PREFIX + "rt:")
    reg = Registry(store, static_private=os.urandom(32), server_id="rt")
    secret, server = os.urandom(32), ("192.0.2.1", 7000)
    clients = [rc.RendezvousClient(secret, os.urandom(32), (f"m{i}",), [], server,
                                   server_key=reg.static_public) for i in range(NETWORK_SIZE)]
    now = time.time()

    def exchange(i: int) -> int:
        before = store.round_trips
        addr = ("203.0.113.1", 1000 + i)
        while out := clients[i].datagrams_to_send():
            for data, _ in out:
                for send in reg.handle(data, addr, now):
                    if send.addr == addr:
                        clients[i].receive_datagram(send.data, server, now)
        return store.round_trips - before

    first = [0] * NETWORK_SIZE
    for i, c in enumerate(clients):
        c.start(now)
        first[i] = exchange(i)
    clients[0].start(now)
    refresh = exchange(0)
    clients[0].request_connect("m1", now)
    intro = exchange(0)
    store.close()
    return {"first_registration": statistics.mean(first), "refresh": refresh,
            "introduction": intro}


def summary(latencies: list[float]) -> dict[str, float | None]:
    if len(latencies) < 2:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    q = statistics.quantiles(latencies, n=100)
    return {"p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2),
            "max_ms": round(max(latencies) * 1000, 2)}


def op_figures(fleet: Fleet, op: str, seconds: float, servers: int) -> dict[str, Any]:
    """One op's figures over a phase: count, rate per server, latency, retries."""
    done = len(fleet.latencies[op])
    return {
        "done": done,
        "per_s_per_server": round(done / seconds / servers, 1),
        **summary(fleet.latencies[op]),
        "retried": fleet.retried[op],
        "transmissions_per_op": round(fleet.transmissions[op] / done, 3) if done else None,
        "waiting_at_end": fleet.pending(op),
    }


def phase_figures(fleet: Fleet, meter: Meter, servers: int) -> dict[str, Any]:
    phase = meter.read()
    for op in OPS:
        if fleet.latencies[op] or fleet.pending(op):
            phase[op] = op_figures(fleet, op, phase["seconds"], servers)
    phase["cookie_requests"] = fleet.cookie_requests
    phase["moves"] = fleet.moves
    phase["refused"] = dict(fleet.refused)
    return phase


async def run(args: argparse.Namespace) -> dict[str, Any]:
    s, per = args.servers, args.nodes_per_server
    total = s * per
    workdir = Path(tempfile.mkdtemp(prefix="rdv-load-"))
    dep = Deployment(s, workdir)
    rand = random.Random(1)
    secrets = [os.urandom(32) for _ in range(total // NETWORK_SIZE + 1)]

    def servers_of(i: int) -> list[tuple[str, int]]:
        first = i % s
        return dep.addrs[first:] + dep.addrs[:first]

    fleet = Fleet(servers_of, lambda i: secrets[i // NETWORK_SIZE], lambda i: (f"n{i}",),
                  dep.key, args.refresh)
    rate = args.rate * s if args.rate else total / (RAMP_INTERVALS * args.refresh)
    window = args.window * s
    result: dict[str, Any] = {"servers": s, "nodes": total, "network_size": NETWORK_SIZE,
                              "refresh_interval": args.refresh, "ramp_rate": round(rate, 1),
                              "ramp_window": window,
                              "redis_round_trips": round_trips(dep.url)}
    print("redis round trips", json.dumps(result["redis_round_trips"]), flush=True)
    try:
        await fleet.add(total)
        loop = asyncio.get_running_loop()
        # 1. ramp: every node registers, at `rate` but never more than `window` waiting
        meter = Meter(dep)
        start = loop.time()
        for i, node in enumerate(fleet.nodes):
            due = start + i / rate
            while loop.time() < due or fleet.pending("register") >= window:
                await asyncio.sleep(max(0.001, min(0.05, due - loop.time())))
            fleet.register(node)
        while fleet.pending("register") and loop.time() - start < total / rate + 60:
            await asyncio.sleep(0.1)
        phase = phase_figures(fleet, meter, s)
        phase["registered_nodes"] = fleet.registered()
        result["ramp"] = phase
        print("ramp", json.dumps(phase), flush=True)
        # From here the refreshes are as spread over the interval as the ramp's registrations
        # were: evenly when the ramp lasted a whole number of intervals (the default).
        # 2. steady: every node refreshes on its own; a few register anew (explicit start())
        fleet.reset()
        meter = Meter(dep)
        start = loop.time()
        while loop.time() - start < args.seconds:
            node = fleet.nodes[rand.randrange(total)]
            if "register" not in node.asked:
                fleet.register(node)
            await asyncio.sleep(1 / (args.probe_rate * s))
        phase = phase_figures(fleet, meter, s)
        phase["registered_nodes"] = fleet.registered()
        phase["registrations_per_s_per_server"] = round(
            (len(fleet.done["refresh"]) + len(fleet.done["register"])) / phase["seconds"] / s, 1)
        result["steady"] = phase
        print("steady", json.dumps(phase), flush=True)
        # 3. introductions, closed loop, with the refreshes going on
        fleet.reset()
        meter = Meter(dep)
        start = loop.time()
        outstanding = args.outstanding * s
        while loop.time() - start < args.seconds:
            while fleet.pending("connect") < outstanding:
                i = rand.randrange(total)
                base = i - i % NETWORK_SIZE
                j = base + rand.randrange(NETWORK_SIZE)
                if j == i or j >= total or "connect" in fleet.nodes[i].asked:
                    continue
                fleet.connect(fleet.nodes[i], f"n{j}")
            await asyncio.sleep(0.002)
        phase = phase_figures(fleet, meter, s)
        done = len(fleet.done["connect"])
        phase["introductions_per_s"] = round(done / phase["seconds"], 1)
        phase["introductions_per_s_per_server"] = round(done / phase["seconds"] / s, 1)
        cpu = sum(phase["server_cpu"]) * phase["seconds"]
        answered = done + len(fleet.done["refresh"]) + len(fleet.done["register"])
        phase["introductions_per_server_cpu_second"] = round(done / cpu, 1) if cpu else None
        # The refreshes go on meanwhile: all the requests a CPU-second answered.
        phase["requests_per_server_cpu_second"] = round(answered / cpu, 1) if cpu else None
        result["introductions"] = phase
        print("introductions", json.dumps(phase), flush=True)
    finally:
        fleet.close()
        dep.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


# Sockets besides the nodes' own: the servers' pipes, Redis, the event loop, stdio.
SPARE_DESCRIPTORS = 256


def descriptors_problem(nodes: int) -> str | None:
    """Each simulated node holds a socket: raise the soft descriptor limit to the hard one, and
    say what to do (one line) if even that is too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = nodes + SPARE_DESCRIPTORS
    if soft < needed <= hard or (hard == resource.RLIM_INFINITY and soft < needed):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return None
    if needed > soft:
        return (f"{nodes:,} nodes need {needed:,} open files, but the limit is {hard:,}: "
                "use fewer --nodes-per-server or --servers, or raise `ulimit -Hn`")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rdv_load")
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--nodes-per-server", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="registrations per server per second in the ramp (default: the "
                        f"nodes over {RAMP_INTERVALS} refresh intervals)")
    parser.add_argument("--window", type=int, default=64,
                        help="registrations waiting per server at most in the ramp")
    parser.add_argument("--refresh", type=float, default=25.0,
                        help="seconds between a node's refreshes (the issue's 25)")
    parser.add_argument("--probe-rate", type=float, default=5.0,
                        help="new registrations (start()) per server per second, steady phase")
    parser.add_argument("--outstanding", type=int, default=32,
                        help="CONNECTs in flight per server in the introduction phase")
    parser.add_argument("--seconds", type=float, default=25.0, help="steady and intro phases")
    args = parser.parse_args(argv)
    problem = descriptors_problem(args.servers * args.nodes_per_server)
    if problem:
        print(f"rdv_load: {problem}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"rdv_load_{args.servers}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
