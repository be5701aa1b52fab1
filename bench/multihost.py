"""Three hosts on one machine (issue 16): network namespaces, PostgreSQL and S3 shared,
a kill -9 of a whole worker host in the middle of a batch.

    sudo .venv/bin/python bench/multihost.py --lines 100000

Layout (each host is a network namespace with its own loopback, joined by a bridge; no
host shares a directory with another):

    root namespace   10.77.0.1   PostgreSQL (the machine's, reached through a socat
                                 forwarder on the bridge), moto's S3 server, the mock
                                 upstream standing in for the GPU servers, and this
                                 script as the client
    host A (bg-a)    10.77.0.2   `batchgate serve --no-worker`
    host B (bg-b)    10.77.0.3   `batchgate worker` (killed with kill -9 mid-batch)
    host C (bg-c)    10.77.0.4   `batchgate worker`

The client uploads the batch to host A over the network, waits until a third of it is
done, kills every process in host B's namespace with SIGKILL, and waits for the batch to
end. Pass: completed, the output file holds every custom_id exactly once (none in the
error file), and the batch's counts match the files. Everything is bounded (--timeout)
and torn down in `finally` (processes, namespaces, bridge, database, bucket).

Needs root (ip netns), socat and PostgreSQL on 127.0.0.1:5432 (trust auth).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import httpx
import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

BRIDGE, SUBNET, ROOT_IP = "bg-br0", "10.77.0", "10.77.0.1"
HOSTS = {"a": f"{SUBNET}.2", "b": f"{SUBNET}.3", "c": f"{SUBNET}.4"}
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
S3_PORT, MOCK_PORT, API_PORT = 9077, 8777, 8000
BUCKET = "batchgate-multihost"
VENV_BIN = Path(sys.executable).parent


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def netns(host: str) -> list[str]:
    return ["ip", "netns", "exec", f"bg-{host}"]


@dataclass
class Cluster:
    work: Path
    dead_after: float = 30.0
    database: str = f"bg_multihost_{os.getpid()}"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def database_url(self) -> str:  # as the hosts reach it: over the bridge
        return f"postgresql://postgres@{ROOT_IP}:5432/{self.database}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BATCHGATE_DATABASE_URL": self.database_url,
            "BATCHGATE_BLOB_URL": f"s3://{BUCKET}/files",
            "BATCHGATE_CONFIG": str(self.work / "batchgate.toml"),
            "BATCHGATE_CONCURRENCY": "64",
            # a dead host's claimed lines go back to the queue after this long (default 30 s)
            "BATCHGATE_DEAD_WORKER_AFTER": str(self.dead_after),
            "AWS_ENDPOINT_URL": f"http://{ROOT_IP}:{S3_PORT}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
            "NO_PROXY": "*",
        }

    # ---- network ------------------------------------------------------------------

    def network_up(self) -> None:
        self.network_down()  # what a run killed before its teardown left behind
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{ROOT_IP}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for host, ip in HOSTS.items():
            ns, outside, inside = f"bg-{host}", f"bg-{host}-h", f"bg-{host}-n"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            sh("ip", "link", "set", inside, "netns", ns)
            sh("ip", "link", "set", outside, "master", BRIDGE, "up")
            sh(*netns(host), "ip", "addr", "add", f"{ip}/24", "dev", inside)
            sh(*netns(host), "ip", "link", "set", inside, "up")
            sh(*netns(host), "ip", "link", "set", "lo", "up")

    def network_down(self) -> None:
        for host in HOSTS:
            self.kill_host(host)
            subprocess.run(["ip", "netns", "del", f"bg-{host}"], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)

    def kill_host(self, host: str) -> int:
        """SIGKILL every process in the host's namespace: the host dies at once."""
        out = subprocess.run(["ip", "netns", "pids", f"bg-{host}"], capture_output=True, text=True).stdout
        pids = [int(p) for p in out.split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    # ---- processes ------------------------------------------------------------------

    def spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - the process's for its lifetime
        self.procs[name] = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=bc._die_with_parent
        )

    def services_up(self) -> None:
        pg = f"TCP-LISTEN:5432,bind={ROOT_IP},fork,reuseaddr"
        self.spawn("socat-pg", ["socat", pg, "TCP:127.0.0.1:5432"])
        self.spawn("s3", [sys.executable, "-m", "moto.server", "-H", ROOT_IP, "-p", str(S3_PORT)])
        mock = Path(__file__).resolve().parent / "mock_upstream.py"
        self.spawn("mock", [sys.executable, str(mock), "--host", ROOT_IP, "--port", str(MOCK_PORT)])
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.database}")
        wait(lambda: reachable(f"http://{ROOT_IP}:{S3_PORT}"), 30, "moto S3 server")
        wait(lambda: reachable(f"http://{ROOT_IP}:{MOCK_PORT}/v1/models"), 30, "mock upstream")
        boto3.client("s3", endpoint_url=f"http://{ROOT_IP}:{S3_PORT}", **creds()).create_bucket(Bucket=BUCKET)
        (self.work / "batchgate.toml").write_text(
            f'[backends.gpu]\nbase_url = "http://{ROOT_IP}:{MOCK_PORT}/v1"\nmax_concurrency = 64\n\n'
            '[models.mock-model]\nbackend = "gpu"\nprice = { input = 0.1, output = 0.2 }\n'
        )

    def batchgate(self, host: str, *args: str) -> list[str]:
        home = self.work / f"host-{host}"  # each host its own data dir: nothing shared on disk
        home.mkdir(exist_ok=True)
        return [*netns(host), str(VENV_BIN / "batchgate"), *args, "--data-dir", str(home)]

    def hosts_up(self) -> str:
        api = f"http://{HOSTS['a']}:{API_PORT}"
        self.spawn("api-a", self.batchgate("a", "serve", "--no-worker", "--host", HOSTS["a"], "--port", str(API_PORT)))
        wait(lambda: reachable(api + "/health"), 60, "the API on host A")
        self.spawn("worker-b", self.batchgate("b", "worker"))
        self.spawn("worker-c", self.batchgate("c", "worker"))
        with psycopg.connect(self.local_database_url) as conn:
            workers = lambda: conn.execute("SELECT count(*) FROM workers").fetchone()[0] >= 2  # type: ignore[index]  # noqa: E731
            wait(workers, 60, "two workers")
        return api

    @property
    def local_database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.database}"

    def create_key(self) -> str:
        """An API key, made on host A as an operator would (`batchgate keys create`)."""
        cmd = self.batchgate("a", "keys", "create", "--project", "multihost")
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"batchgate keys create failed: {done.stderr or done.stdout}")
        return done.stdout.strip().splitlines()[-1]

    def down(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.network_down()
        with contextlib.suppress(psycopg.Error), psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")


def creds() -> dict[str, str]:
    return {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}


def reachable(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.HTTPError:
        return False


def wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")


def batch_lines(n: int) -> Iterator[bytes]:
    for i in range(n):
        body = {"model": "mock-model", "messages": [{"role": "user", "content": f"record {i}"}], "max_tokens": 4}
        yield orjson.dumps({"custom_id": f"r-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})


def run(lines: int, timeout: float, dead_after: float) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="bg-multihost-"))
    cluster = Cluster(work, dead_after)
    try:
        cluster.network_up()
        cluster.services_up()
        key = cluster.create_key()
        api = cluster.hosts_up()
        client = httpx.Client(base_url=api + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=120)
        payload = b"\n".join(batch_lines(lines)) + b"\n"
        t0 = time.perf_counter()
        file = client.post("/files", files={"file": ("in.jsonl", payload)}, data={"purpose": "batch"}).json()
        batch = client.post(
            "/batches",
            json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        ).json()
        created = time.perf_counter()
        killed_at = None
        while True:
            b = client.get(f"/batches/{batch['id']}").json()
            done = b["request_counts"]["completed"] + b["request_counts"]["failed"]
            if killed_at is None and done >= lines // 3:
                killed_at = (done, cluster.kill_host("b"), time.perf_counter() - t0)
                print(f"kill -9 of host B at {done:,}/{lines:,} lines ({killed_at[1]} processes)", flush=True)
            if b["status"] in ("completed", "failed", "expired", "cancelled"):
                break
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"batch not done after {timeout:.0f} s: {b['status']} {b['request_counts']}")
            time.sleep(0.5)
        elapsed = time.perf_counter() - t0
        output = client.get(f"/files/{b['output_file_id']}/content").content if b.get("output_file_id") else b""
        errors = client.get(f"/files/{b['error_file_id']}/content").content if b.get("error_file_id") else b""
        ids = Counter(orjson.loads(line)["custom_id"] for line in output.splitlines() if line)
        error_ids = Counter(orjson.loads(line)["custom_id"] for line in errors.splitlines() if line)
        result = {
            "lines": lines,
            "status": b["status"],
            "request_counts": b["request_counts"],
            "output_lines": sum(ids.values()),
            "distinct_custom_ids": len(ids),
            "duplicates": sum(c - 1 for c in ids.values() if c > 1),
            "error_lines": sum(error_ids.values()),
            "killed_at_done": killed_at[0] if killed_at else None,
            "seconds_at_kill": round(killed_at[2], 2) if killed_at else None,
            "upload_and_create_s": round(created - t0, 2),
            "processes_killed": killed_at[1] if killed_at else 0,
            "seconds": round(elapsed, 2),
            "lines_per_s": round(lines / elapsed),
        }
        result["passed"] = (
            b["status"] == "completed"
            and killed_at is not None
            and set(ids) == {f"r-{i}" for i in range(lines)}
            and result["duplicates"] == 0
            and not error_ids
            and b["request_counts"] == {"total": lines, "completed": lines, "failed": 0}
        )
        return result
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--dead-after", type=float, default=30, help="BATCHGATE_DEAD_WORKER_AFTER (default 30 s)")
    p.add_argument("--timeout", type=float, default=900, help="give up after this many seconds (default 900)")
    args = p.parse_args()
    if os.geteuid() != 0 or not shutil.which("socat"):
        sys.exit("needs root (ip netns) and socat")
    load = os.getloadavg()[0]
    result = run(args.lines, args.timeout, args.dead_after) | {"load_average_at_start": round(load, 1)}
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
