"""`mmsearch serve` under concurrent load: text-query latency and throughput over a large index.

    python -m bench.serve_load --size smoke|full [--clients 16] [--previous-release REF|none] [--json out.json]

Builds an index of synthetic items (bench/synthetic_index.py: written through the store and the
writer, vectors from the embedding-like mixture at the default model's width; 1M items full, 10k
smoke), starts `python -m mmsearch serve` on 127.0.0.1 at a free port, then sends text queries from
N concurrent clients on loopback only, bounded in count and time. The baseline from the same run is
one client sending the same queries one after another. The server is stopped by this script.

Against the previous release's request path, in the same run: the same index is then served by the
code of ``--previous-release`` (a git commit of this repository, exported with ``git archive`` into the
work dir, nothing checked out here) and measured the same way, one server after the other. The default
is the last commit before the issue-16 request path (PREVIOUS_RELEASE) at the full size, none at the
smoke size (CI). Both servers run in this environment (the same installed libraries), so the comparison
is of the request path's code, and both serve the model without the colour channel (``MMSEARCH_COLOUR=off``:
the previous release has none, and an index serves one model id) and with the previous release's weights
file (its code cannot read newer ones; a text query runs only the text side, which they share); for a
text query the channel is a scan for colour words and 11 more dimensions per vector. For each server: CPU ms per query of the server process and of this load generator
(both share the cores), p50/p99 at 1 and N clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import REPO, emit_json, machine, print_table, python
from bench.synthetic_index import WORDS, build_synthetic_index
from bench.vectors import Mixture, default_model_dim
from mmsearch.vectors.ann import AnnOptions

SIZES = {"smoke": {"n": 10_000, "requests": 160, "baseline_requests": 40},
         "full": {"n": 1_000_000, "requests": 4000, "baseline_requests": 300}}
MAX_SECONDS = 600  # every load phase stops after this long, whatever is left
PREVIOUS_RELEASE = "d52d685"  # main before the lighter request path (issue 16)
GOALS = {"server_cpu_ms_per_request": 2.0, "p50_ms": 20.0}  # at the full size, N clients


def served_model(release: Path | None) -> tuple[str, str]:
    """(spec, id) of the model both servers run: mmsearch-lite without its colour channel (MMSEARCH_COLOUR=off),
    with the weights file of the earlier release when one is compared (its code may not read a newer file;
    the text side, all a text query runs, is the same in both), else the shipped one. The id is read
    without loading the model (same rule as encoders/lite.load_lite)."""
    from mmsearch.encoders.lite import lite_model_id, shipped_weights

    if release is None:
        return "mmsearch-lite", lite_model_id(shipped_weights())
    weights = release / "mmsearch" / "encoders" / "weights" / "mmsearch-lite.safetensors"
    return f"mmsearch-lite:{weights}", lite_model_id(weights)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def queries(count: int, seed: int = 5) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"a {rng.choice(WORDS)} {rng.choice(WORDS)} near the {rng.choice(WORDS)}" for _ in range(count)]


def build_index(path: Path, n: int, model: tuple[str, str]) -> dict:
    dim = default_model_dim()
    mixture = Mixture(dim, clusters=min(1024, max(64, n // 1000)), seed=7)
    return build_synthetic_index(path, dim, mixture.batches(n, seed=1), model_spec=model[0], model_id=model[1],
                                 options=AnnOptions())


def serve_model_of(index_dir: Path, model: tuple[str, str]) -> None:
    """Point a kept index at ``model``: its vectors are synthetic, the model only embeds the queries (an
    index built for another weights file is not built again: that takes ~18 min at 1M items)."""
    from mmsearch.storage.indexdir import IndexDir

    folder = IndexDir(index_dir)
    manifest = folder.read_manifest()
    if (manifest.model_spec, manifest.model_id) != model:
        manifest.model_spec, manifest.model_id = model
        folder.write_manifest(manifest)


def start_server(index_dir: Path, port: int, env: dict, code: Path = REPO) -> subprocess.Popen:
    """``mmsearch serve`` of the code in ``code`` (this checkout, or an exported earlier release)."""
    args = [python(), "-m", "mmsearch", "serve", "--index-dir", str(index_dir), "--host", "127.0.0.1", "--port", str(port)]
    env = dict(env, PYTHONPATH=str(code))
    return subprocess.Popen(args, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def export_release(ref: str, work_dir: Path) -> Path:
    """The package code of commit ``ref`` in ``work_dir/release-<ref>`` (``git archive``: the repository's
    work tree and worktree list stay untouched)."""
    dest = work_dir / f"release-{ref}"
    if not (dest / "mmsearch" / "__init__.py").exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref, "mmsearch", "indexer"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Until ``/readyz`` says the model is loaded (a server from before readiness existed: ``/healthz``)."""
    deadline = time.monotonic() + timeout
    probe = "/readyz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{proc.stderr.read()[-3000:]}")
        try:
            status = httpx.get(f"{base}{probe}", timeout=2).status_code
            if status == 200:
                return
            if status == 404:
                probe = "/healthz"
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become ready in time")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_load(base: str, texts: list[str], clients: int, server_pid: int) -> dict:
    """:func:`load`, plus the CPU time per request the server and this load generator each used: on a
    machine where both share the cores, the two together bound the requests/s any server could reach."""
    server_before, client_before = process_cpu_seconds(server_pid), own_cpu_seconds()
    result = asyncio.run(load(base, texts, clients))
    requests = max(1, result["requests"])
    result["server_cpu_ms_per_request"] = round(1000 * (process_cpu_seconds(server_pid) - server_before) / requests, 2)
    result["client_cpu_ms_per_request"] = round(1000 * (own_cpu_seconds() - client_before) / requests, 2)
    return result


class HttpConnection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer, on bare asyncio streams.

    Why not httpx here: its per-request work (~1.4 ms of CPU with 16 clients) runs on the same two cores
    as the server under test and caps what the server can show; this client does the least a client
    must (format the request, read the status line, headers and body) in ~0.2 ms."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, payload: dict) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(payload).encode()
        self._writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                           % (path.encode(), self.host.encode(), self.port, len(body), body))
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(":", 1) for line in header_lines if ":" in line)
        length = int(next((v for k, v in headers.items() if k.strip().lower() == "content-length"), "0"))
        return int(status_line.split()[1]), await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()


async def load(base: str, texts: list[str], clients: int) -> dict:
    """``clients`` concurrent clients (one keep-alive connection each) share the query list; -> latency
    percentiles, requests/s, errors (a non-200 answer or one without hits)."""
    latencies: list[float] = []
    errors = 0
    pending = list(reversed(texts))
    deadline = time.monotonic() + MAX_SECONDS
    url = httpx.URL(base)

    async def client(connection: HttpConnection) -> None:
        nonlocal errors
        while pending and time.monotonic() < deadline:
            text = pending.pop()
            started = time.perf_counter()
            status, body = await connection.post_json("/v1/search", {"text": text, "k": 10, "target": "image"})
            latencies.append(1000 * (time.perf_counter() - started))
            if status != 200 or b'"hits":[]' in body.replace(b" ", b""):
                errors += 1

    connections = [HttpConnection(url.host, url.port) for _ in range(clients)]
    try:
        await connections[0].post_json("/v1/search", {"text": "warm up", "k": 10})
        started = time.perf_counter()
        await asyncio.gather(*(client(connection) for connection in connections))
        seconds = time.perf_counter() - started
    finally:
        for connection in connections:
            await connection.close()
    a = np.asarray(latencies)
    return {"clients": clients, "requests": len(a), "errors": errors, "seconds": round(seconds, 2),
            "requests_per_s": round(len(a) / seconds, 1), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1)}


def serve_and_measure(index_dir: Path, env: dict, spec: dict, clients: int, code: Path = REPO) -> dict:
    """Start a server of ``code`` over ``index_dir``, measure 1 client then ``clients`` clients, stop it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(index_dir, port, env, code)
    try:
        wait_ready(base, proc)
        info = httpx.get(f"{base}/v1/info", timeout=10).json()
        sequential = measure_load(base, queries(spec["baseline_requests"], seed=6), 1, proc.pid)
        concurrent = measure_load(base, queries(spec["requests"]), clients, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"index": info.get("index_factory"), "1_client": sequential, f"{clients}_clients": concurrent}


def _ratio(new: float, old: float) -> float | None:
    return round(new / old, 2) if old else None


def run(size: str, clients: int, work_dir: Path, previous: str | None = "default") -> dict:
    spec = SIZES[size]
    previous = (PREVIOUS_RELEASE if size == "full" else None) if previous == "default" else previous
    index_dir = work_dir / f"serve-index-{spec['n']}"
    release = export_release(previous, work_dir) if previous else None
    model = served_model(release)
    built = None
    if not (index_dir / "manifest.json").exists():
        shutil.rmtree(index_dir, ignore_errors=True)
        built = build_index(index_dir, spec["n"], model)
    serve_model_of(index_dir, model)
    # both servers run the model the previous release had: the towers without the colour channel
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MMSEARCH_COLOUR="off")
    env.setdefault("MMSEARCH_CACHE_DIR", str(work_dir / "cache"))
    current = serve_and_measure(index_dir, env, spec, clients)
    sequential, concurrent = current["1_client"], current[f"{clients}_clients"]
    result = {
        "benchmark": "serve_load", "size": size, "items": spec["n"], "machine": machine(), "index": current["index"],
        "build": {k: v for k, v in (built or {}).items() if k != "manifest"},
        "baseline_1_client": sequential, f"load_{clients}_clients": concurrent,
        "throughput_ratio": round(concurrent["requests_per_s"] / sequential["requests_per_s"], 2),
        "goals": {name: {"target": target, "value": concurrent[name], "met": concurrent[name] <= target} for name, target in GOALS.items()},
    }
    rows = [(f"this code, {clients} clients", concurrent), ("this code, 1 client (baseline)", sequential)]
    if previous:
        old = serve_and_measure(index_dir, env, spec, clients, release)
        result["previous_release"] = {"ref": previous, **old}
        result["vs_previous_release"] = {
            f"{n}_client{'s' if n > 1 else ''}": {
                "server_cpu_ms_ratio": _ratio(new["server_cpu_ms_per_request"], was["server_cpu_ms_per_request"]),
                "p50_ratio": _ratio(new["p50_ms"], was["p50_ms"]), "p99_ratio": _ratio(new["p99_ms"], was["p99_ms"]),
            }
            for n, new, was in ((clients, concurrent, old[f"{clients}_clients"]), (1, sequential, old["1_client"]))
        }
        rows += [(f"release {previous}, {clients} clients", old[f"{clients}_clients"]), (f"release {previous}, 1 client", old["1_client"])]
    print_table(
        f"text queries against mmsearch serve, {spec['n']} items ({size}; load {result['machine']['loadavg_1_5_15']})",
        [(name, r["p50_ms"], r["p99_ms"], r["requests_per_s"], r["errors"], r["server_cpu_ms_per_request"], r["client_cpu_ms_per_request"])
         for name, r in rows],
        ("server", "p50 ms", "p99 ms", "requests/s", "errors", "server CPU ms/req", "client CPU ms/req"),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="smoke")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mmsearch-bench")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--previous-release", default="default",
                        help=f"git commit whose server to measure too ('none': skip) [default: {PREVIOUS_RELEASE} at full size, none at smoke]")
    parser.add_argument("--requests", type=int, default=None, help="queries of the N-client phase [default: the size's]")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.requests:
        SIZES[args.size] = dict(SIZES[args.size], requests=args.requests, baseline_requests=max(20, args.requests // 10))
    previous = None if args.previous_release == "none" else args.previous_release
    emit_json(run(args.size, args.clients, args.work_dir, previous), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
