"""Nodes sharing one store (issue 18): model delivery through the object store, and
conversions per minute with one, two and three nodes on one job queue.

About 5 min on 2 cores with the defaults (``--jobs 6 --repeat 3``: about 1.2 min).

Real engines, started here as the tests start them (``tests/postgres_server.py``,
``tests/s3_server.py``, ``tests/redis_server.py``): PostgreSQL for the catalog, SeaweedFS's
S3 gateway for the blobs, Redis for the session bus; ``holo serve`` processes
(``holo.testing.ServeProcess``) with ``--store postgresql://... --blobs s3://... --node NAME
--workers 1``, each with its own ``--data`` (its blob cache). The baseline of both parts is
one node with the embedded store (SQLite and a local folder, no ``--store``/``--blobs``),
measured in the same run.

1. ``GetModel`` of the sample knee (``sample_data/knee_ct``, converted on node A alone, so
   its blob is in A's cache): from a fresh node process (no model in the server's memory:
   the blob is read from A's disk, or read through from S3 on B and C) and repeated (the
   server keeps served models in memory, ``holo.store.cache.BlobCache``). Time to the
   manifest, to the first level of detail, to the whole model (``FetchResult``), medians
   of ``--repeat``; ratios against node A and against the embedded store.
2. ``--jobs`` conversions of the uploaded knee queued at once through node A, with one, two
   and three nodes running, and on the embedded store; wall time from the first
   ``StartConversion`` to the last job's finish, conversions a minute, the node that ran
   each job (the ``jobs`` table), CPU seconds per conversion of the node processes with
   their conversion workers and of PostgreSQL and SeaweedFS (from /proc).

Checks no timing; prints tables (it stops only if its set-up is not what it measures).
Everything shares this machine's cores (2 here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the engine helpers the tests use

import psycopg  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from s3_server import S3Server  # noqa: E402
from tables import print_table  # noqa: E402

from holo.auth import load_secret  # noqa: E402
from holo.client import FetchResult  # noqa: E402
from holo.testing import ServeProcess  # noqa: E402
from holo.v1 import asset_pb2  # noqa: E402

SAMPLE = REPO / "sample_data" / "knee_ct"
CASE = "bench-cluster"
FINAL = (
    asset_pb2.JOB_STATE_SUCCEEDED,
    asset_pb2.JOB_STATE_FAILED,
    asset_pb2.JOB_STATE_CANCELLED,
)


class Node:
    """One ``holo serve`` that can be stopped and started again on the same ``--data``
    (a restart empties the server's memory: its model cache and manifests)."""

    def __init__(
        self,
        name: str,
        data: Path,
        options: tuple[str, ...] = (),
        *,
        bus: str = "memory",
        secret: Path | None = None,
    ) -> None:
        self.name = name
        self.data = data
        self.options = options
        self.bus = bus
        self.secret = secret
        self.process: ServeProcess | None = None

    def start(self) -> ServeProcess:
        if self.process is None:
            self.process = ServeProcess(
                self.data, bus=self.bus, secret=self.secret, options=self.options
            )
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def restart(self) -> ServeProcess:
        self.stop()
        return self.start()

    @property
    def running(self) -> ServeProcess:
        assert self.process is not None, f"node {self.name} is not running"
        return self.process


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and everything under it: user + system + waited-for
    children's of each live process in its tree (/proc/PID/stat fields 14-17), so a
    conversion worker counts whether it still runs or has exited and been joined."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        proc = int(stat.parent.name)
        parent[proc] = int(fields[1])
        cpu[proc] = sum(int(f) for f in fields[11:15])
    tree, frontier = {pid}, [pid]
    while frontier:
        here = frontier.pop()
        for proc, up in parent.items():
            if up == here and proc not in tree:
                tree.add(proc)
                frontier.append(proc)
    return sum(cpu.get(proc, 0) for proc in tree) / tick


def engine_pids(database: str, endpoint: str) -> list[int]:
    """The PostgreSQL postmaster's and SeaweedFS's process ids: their trees do all their
    work (a PostgreSQL backend is a child of the postmaster; ``weed server`` runs master,
    volume, filer and S3 gateway in one process)."""
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        stat = Path(f"/proc/{row[0]}/stat").read_text()
        postmaster = int(stat.rsplit(")", 1)[1].split()[1])
    wanted = f"-s3.port={endpoint.rsplit(':', 1)[1]}".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if wanted in cmdline.read_bytes().split(b"\0"):
                return [postmaster, int(cmdline.parent.name)]
        except OSError:
            continue
    raise SystemExit(f"SeaweedFS for {endpoint} not found in /proc")


def upload(node: ServeProcess, case: str) -> str:
    """Upload the sample knee to ``case``; the study's id."""
    with node.client("radiologist", case) as radiologist:
        return radiologist.upload_study([SAMPLE]).study_id.value


def convert(node: ServeProcess, case: str, study_id: str) -> tuple[str, str]:
    """Convert the study and wait for it; (job id, model id)."""
    with node.client("radiologist", case) as radiologist:
        job = radiologist.wait_job(radiologist.start_conversion(study_id).job_id.value)
    if job.state != asset_pb2.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"converting {SAMPLE} failed: {job.message}")
    return job.job_id.value, job.model_id.value


def fetch(node: ServeProcess, case: str, model_id: str) -> FetchResult:
    """One GetModel from a new client (a headset that connects and fetches)."""
    with node.client("observer", case) as observer:
        return observer.fetch_model(model_id)


def cached_blob(node: Node, sha256: str) -> Path:
    """Where the node's blob cache keeps a blob (``DATA/blobs/ab/cdef...``)."""
    return node.data / "blobs" / sha256[:2] / sha256[2:]


def job_nodes(database: str, job_ids: list[str]) -> dict[str, tuple[str, int]]:
    """job id -> (the node that ran it, how often it was started), from the catalog."""
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT job_id, node, attempts FROM jobs WHERE job_id = ANY(%s)", (job_ids,)
        ).fetchall()
    return {job_id: (node, attempts) for job_id, node, attempts in rows}


# 1. GetModel ----------------------------------------------------------------------------


class Samples:
    """Fetch timings of one row, in milliseconds."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.results: list[FetchResult] = []

    def add(self, result: FetchResult) -> None:
        self.results.append(result)

    def median_ms(self, what: Callable[[FetchResult], float]) -> float:
        return 1000 * statistics.median(what(r) for r in self.results)

    @property
    def first_lod(self) -> float:
        return self.median_ms(lambda r: r.seconds_to_first_lod)

    @property
    def total(self) -> float:
        return self.median_ms(lambda r: r.seconds_total)

    def row(self, base: Samples, embedded: Samples) -> list[object]:
        sizes = {r.bytes_received for r in self.results}
        return [
            self.label,
            len(self.results),
            f"{self.median_ms(lambda r: r.seconds_to_manifest):.1f}",
            f"{self.first_lod:.1f}",
            f"{self.total:.1f}",
            ",".join(str(s) for s in sorted(sizes)),
            f"{self.first_lod / base.first_lod:.2f}",
            f"{self.total / base.total:.2f}",
            f"{self.total / embedded.total:.2f}",
        ]


def get_model(embedded: Node, nodes: list[Node], database: str, repeat: int) -> str:
    """Table 1; returns the embedded store's study (part 2 converts it again)."""
    e_fresh = Samples("one node, embedded store: blob on local disk")
    e_warm = Samples("one node, embedded store: repeated")
    a_fresh = Samples("node A: blob in A's cache (local disk)")
    a_warm = Samples("node A: repeated")
    s3_fresh = Samples("nodes B, C: read through from S3")
    b_warm = Samples("node B: second and later fetches")

    serve = embedded.start()
    e_study = upload(serve, CASE)
    _, e_model = convert(serve, CASE, e_study)
    for k in range(repeat):  # the first right after the conversion, then after restarts
        e_fresh.add(fetch(embedded.restart() if k else serve, CASE, e_model))
    for _ in range(repeat):
        e_warm.add(fetch(embedded.running, CASE, e_model))
    embedded.stop()

    a, b, c = nodes
    b.stop()  # A alone converts: the blob lands in A's cache
    c.stop()
    study = upload(a.start(), CASE)
    job_id, model = convert(a.running, CASE, study)
    ran_on = job_nodes(database, [job_id])[job_id][0]
    for k in range(repeat):
        a_fresh.add(fetch(a.restart() if k else a.running, CASE, model))
    for _ in range(repeat):
        a_warm.add(fetch(a.running, CASE, model))
    sha256 = a_fresh.results[0].manifest.sha256
    for node in (b, c):
        node.start()
        if cached_blob(node, sha256).exists():
            raise SystemExit(f"node {node.name} holds the blob before its first fetch")
        s3_fresh.add(fetch(node.running, CASE, model))
    for _ in range(repeat):
        b_warm.add(fetch(b.running, CASE, model))
    deleted = 0
    for _ in range(max(0, repeat - 2)):
        b.stop()
        cached_blob(b, sha256).unlink()
        deleted += 1
        s3_fresh.add(fetch(b.start(), CASE, model))
    if not cached_blob(b, sha256).is_file():
        raise SystemExit("node B did not keep the blob it read through from S3")

    print_table(
        f"1. GetModel of the sample knee, ms (median of n; {repeat} wanted)",
        [
            "where the model's bytes come from",
            "n",
            "manifest",
            "first LOD",
            "total",
            "bytes",
            "first LOD / A",
            "total / A",
            "total / embedded",
        ],
        [
            ["-- from a fresh server process (no model in its memory) --"] + [""] * 8,
            e_fresh.row(a_fresh, e_fresh),
            a_fresh.row(a_fresh, e_fresh),
            s3_fresh.row(a_fresh, e_fresh),
            ["-- repeated (model bytes in the server's memory) --"] + [""] * 8,
            e_warm.row(a_warm, e_warm),
            a_warm.row(a_warm, e_warm),
            b_warm.row(a_warm, e_warm),
        ],
    )
    print(
        f"The model was converted on node A alone (the jobs table says node {ran_on!r}).\n"
        "Each fetch is a new client (new connection). A server keeps every model it served\n"
        "in memory (holo.store.cache.BlobCache), so only its first fetch reads the blob:\n"
        "the 'fresh' rows are the first fetch of a process, the first right after the\n"
        "conversion (A, embedded) or after the node started, the rest after a restart.\n"
        f"Read through from S3: B's and C's first fetch, then {deleted} more on B, each\n"
        "after stopping B, deleting its cached blob file DATA/blobs/xx/yyyy and starting\n"
        "it again (deleting the file alone would not do: the bytes are in its memory).\n"
        "A server reads the whole blob before it sends the first byte of the model, so a\n"
        "read-through's first LOD waits for the whole object from S3 (and its SHA-256 check).\n"
        "Ratios: fresh rows against node A's fresh row, repeated rows against A's repeated."
    )
    return e_study


# 2. Conversions per minute --------------------------------------------------------------


def run_queue(
    queue_at: ServeProcess,
    running: list[Node],
    engines: list[int],
    case: str,
    study_id: str,
    jobs: int,
) -> tuple[list[str], float, float, float]:
    """Queue ``jobs`` conversions through ``queue_at`` and wait for all to finish.

    Returns the job ids, the wall seconds from the first StartConversion to the last
    job's finish (its ``finished_unix_ns``), and the CPU seconds meanwhile of the nodes
    and of the ``engines`` (process ids).
    """
    cpu_before = sum(tree_cpu_seconds(n.running.pid) for n in running)
    engines_before = sum(tree_cpu_seconds(pid) for pid in engines)
    with queue_at.client("radiologist", case) as radiologist:
        started = time.time()
        ids = [radiologist.start_conversion(study_id).job_id.value for _ in range(jobs)]
        while True:
            states = {j.job_id.value: j for j in radiologist.list_jobs(case)}
            mine = [states[i] for i in ids if i in states]
            if len(mine) == jobs and all(j.state in FINAL for j in mine):
                break
            time.sleep(0.25)
    cpu = sum(tree_cpu_seconds(n.running.pid) for n in running) - cpu_before
    engines_cpu = sum(tree_cpu_seconds(pid) for pid in engines) - engines_before
    failed = [j for j in mine if j.state != asset_pb2.JOB_STATE_SUCCEEDED]
    if failed:
        raise SystemExit(f"{len(failed)} conversions failed: {failed[0].message}")
    wall = max(j.finished_unix_ns for j in mine) / 1e9 - started
    return ids, wall, cpu, engines_cpu


def throughput(
    embedded: Node, e_study: str, nodes: list[Node], engines: list[int], database: str, jobs: int
) -> None:
    """Table 2."""
    rows: list[list[object]] = []
    order: list[str] = []
    serve = embedded.start()
    _, wall, cpu, _ = run_queue(serve, [embedded], [], CASE, e_study, jobs)
    embedded.stop()
    base = jobs / (wall / 60)
    rows.append(
        ["one node, embedded store", 1, jobs, f"{wall:.1f}", f"{base:.2f}", "1.00",
         f"{cpu / jobs:.2f}", "", f"{cpu / wall:.2f}", "(one node)"]
    )  # fmt: skip
    for count in (1, 2, 3):
        for node in nodes[count:]:
            node.stop()
        running = nodes[:count]
        for node in running:
            node.start()
        case = f"{CASE}-{count}-nodes"  # a case of its own: this round's jobs only
        study = upload(running[0].running, case)
        ids, wall, cpu, engines_cpu = run_queue(
            running[0].running, running, engines, case, study, jobs
        )
        ran = job_nodes(database, ids)
        per_node = Counter(ran[i][0] for i in ids)
        restarted = sum(1 for i in ids if ran[i][1] != 1)
        rate = jobs / (wall / 60)
        shares = " ".join(f"{n.name}:{per_node.get(n.name, 0)}" for n in running)
        rows.append(
            [f"{count} node{'s' if count > 1 else ''}, PostgreSQL + S3", count, jobs,
             f"{wall:.1f}", f"{rate:.2f}", f"{rate / base:.2f}", f"{cpu / jobs:.2f}",
             f"{engines_cpu / jobs:.2f}", f"{(cpu + engines_cpu) / wall:.2f}",
             shares + (f" ({restarted} started twice)" if restarted else "")]
        )  # fmt: skip
        order.append(
            f"  {count} node{'s' if count > 1 else ' '}: " + "".join(ran[i][0] for i in ids)
        )
    print_table(
        f"2. {jobs} conversions of the sample knee queued at once through node A, "
        "each node --workers 1",
        [
            "store",
            "nodes",
            "jobs",
            "wall s",
            "conversions/min",
            "/ embedded",
            "nodes CPU s/conv",
            "engines CPU s/conv",
            "cores busy",
            "jobs run by node",
        ],
        rows,
    )
    print("The node that ran each job, in the order they were queued (the jobs table's node):")
    print("\n".join(order))
    print(
        "Wall time: from the first StartConversion to the last job's finished_unix_ns.\n"
        "nodes CPU: the holo serve processes and their conversion workers (/proc, incl.\n"
        "children), the running nodes summed; engines CPU: PostgreSQL and SeaweedFS (Redis,\n"
        "the session bus, has no part here); cores busy = all of it / wall time.\n"
        f"This machine has {os.cpu_count()} cores: the nodes share them, so a third node "
        "cannot add throughput\nbeyond what two cores give; on machines of their own each "
        "node would bring its own cores."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs", type=int, default=42, help="conversions queued per round (default 42)"
    )
    parser.add_argument(
        "--repeat", type=int, default=10, help="fetches per GetModel row (default 10)"
    )
    args = parser.parse_args()
    if args.repeat < 2:
        parser.error("--repeat must be at least 2 (B and C give the first two read-throughs)")
    begun = time.perf_counter()
    print(
        f"holo cluster benchmark: {os.cpu_count()} cores, shared by PostgreSQL, SeaweedFS, "
        "Redis, every node and the client"
    )
    with tempfile.TemporaryDirectory(prefix="holo-bench-cluster-") as folder, ExitStack() as stack:
        root = Path(folder)
        postgres = PostgresServer()
        stack.enter_context(postgres)
        endpoint = stack.enter_context(S3Server())
        redis_url = stack.enter_context(RedisServer())
        database = postgres.database()
        load_secret(root / "secret")  # one token secret for the nodes of the group
        options = (
            "--store", database,
            "--blobs", f"s3://holo-bench/{uuid.uuid4().hex[:8]}",
            "--s3-endpoint", endpoint,
            "--workers", "1",
        )  # fmt: skip
        nodes = [
            Node(
                name,
                root / f"node-{name}",
                (*options, "--node", name),
                bus=redis_url,
                secret=root / "secret" / "secret.key",
            )
            for name in ("A", "B", "C")
        ]
        embedded = Node("embedded", root / "embedded", ("--workers", "1"))
        for node in (*nodes, embedded):
            stack.callback(node.stop)
        engines = engine_pids(database, endpoint)
        e_study = get_model(embedded, nodes, database, args.repeat)
        print(f"\n(part 1 done after {time.perf_counter() - begun:.0f} s)", flush=True)
        throughput(embedded, e_study, nodes, engines, database, args.jobs)
    print(f"\nbenchmark wall time: {time.perf_counter() - begun:.0f} s")


if __name__ == "__main__":
    main()
