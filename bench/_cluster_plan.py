"""The cost of a 1 TB iteration on 32 and 256 workers, from ``bench/object_store.py``'s measured
per-request and per-byte costs and the assumptions in :data:`PLAN`.
"""

from __future__ import annotations

#: The cluster plan's case: 1 TB of float32 rows per iteration, K=64, D=64 (as scaling.py's),
#: nodes with 1 GB/s each and 8 single-threaded workers per node.
PLAN = {
    "bytes": 10**12,
    "node_bandwidth": 1e9,
    "workers_per_node": 8,
    "workers": (32, 256),
    "latencies": (0.05, 0.1),
    "object_mib": (8, 64),
}


def cluster_plan(result):
    """A 1 TB iteration on 32 and 256 workers from this run's per-request and per-byte costs.

    Measured here: the kernel's seconds per 16 MiB chunk at K=64, D=64 (scaling.py's
    ``plan_chunk_figures``, one thread), the workers' CPU per GiB read from the server (reading
    alone, no latency), a chunk GET's time at the proxy with no latency (this server's time to
    serve one) and the data's compression. Assumed: :data:`PLAN` (1 GB/s and 8 workers per node,
    the latencies). Derived: the rest.
    """
    chunk = result["plan_chunk"]
    fast = result["requests"]["fast_r1"]
    stored_per_get = fast["median"]["get_bytes"] / fast["median"]["chunk_gets"]
    serve_seconds = fast["get_seconds_median"]  # one GET, no injected latency
    read_cpu_per_byte = (
        result["per_iteration"]["read_alone_fast_cpu"] / result["bytes_per_iteration"]
    )
    ratio = chunk["compression_ratio"]
    read_cpu_per_chunk = read_cpu_per_byte * chunk["chunk_bytes"] / ratio
    core_rate = chunk["chunk_bytes"] / (chunk["kernel_seconds"] + read_cpu_per_chunk)
    worker_bandwidth = PLAN["node_bandwidth"] / PLAN["workers_per_node"]
    stored = PLAN["bytes"] / ratio
    # Little's law: a worker receiving b bytes/s in objects of s bytes, each waiting ``latency``
    # before its bytes come at the worker's rate, has b * (latency + s / b) / s in flight
    in_flight = {
        f"{mib} MiB, {latency * 1000:.0f} ms": worker_bandwidth * latency / (mib * 2**20 / ratio)
        + 1
        for mib in PLAN["object_mib"]
        for latency in PLAN["latencies"]
    }
    clusters = {}
    for workers in PLAN["workers"]:
        nodes = workers / PLAN["workers_per_node"]
        network = stored / (nodes * PLAN["node_bandwidth"])
        cpu = PLAN["bytes"] / (workers * core_rate)
        clusters[str(workers)] = {
            "nodes": nodes,
            "network_seconds": network,
            "cpu_seconds": cpu,
            "iteration_seconds": max(network, cpu),
            "bound_by": "network" if network >= cpu else "CPU",
            "gets_per_second": {
                f"{mib} MiB": PLAN["bytes"] / (mib * 2**20) / max(network, cpu)
                for mib in PLAN["object_mib"]
            },
        }
    return {
        "assumed": PLAN,
        "kernel_seconds_per_chunk": chunk["kernel_seconds"],
        "chunk_bytes": chunk["chunk_bytes"],
        "compression_ratio": ratio,
        "read_cpu_seconds_per_gib_stored": read_cpu_per_byte * 2**30,
        "read_cpu_seconds_per_chunk": read_cpu_per_chunk,
        "core_bytes_per_second": core_rate,
        "get_serve_seconds": serve_seconds,
        "stored_bytes_per_get": stored_per_get,
        "worker_bandwidth": worker_bandwidth,
        "in_flight_per_worker": in_flight,
        "gets_per_iteration": {
            f"{mib} MiB": PLAN["bytes"] / (mib * 2**20) for mib in PLAN["object_mib"]
        },
        "clusters": clusters,
    }


def render_plan(result):
    p = result["plan"]
    lines = [
        "Cluster plan: 1 TB of float32 rows per iteration, K=64, D=64 (derived; the "
        "measured inputs first):",
        "",
        f"* measured: kernel {p['kernel_seconds_per_chunk']:.3f} s per "
        f"{p['chunk_bytes'] / 2**20:.0f} MiB chunk (1 thread); reading from the server "
        f"{p['read_cpu_seconds_per_gib_stored']:.2f} worker CPU s per GiB stored "
        f"({p['read_cpu_seconds_per_chunk']:.3f} s per chunk); compression "
        f"{p['compression_ratio']:.2f}x; one chunk GET served in {p['get_serve_seconds']:.3f} s "
        f"({p['stored_bytes_per_get'] / 2**20:.1f} MiB) at the proxy, no injected latency, "
        f"with the fit's reads in flight",
        f"* one core reads and computes {p['core_bytes_per_second'] / 1e6:.0f} MB/s of rows; a "
        f"worker's share of a 1 GB/s node with {p['assumed']['workers_per_node']} workers: "
        f"{p['worker_bandwidth'] / 1e6:.0f} MB/s",
        "* requests in flight per worker for that share: "
        + ", ".join(f"{k}: {v:.1f}" for k, v in p["in_flight_per_worker"].items()),
        "* GETs per iteration: "
        + ", ".join(f"{k} objects: {v:,.0f}" for k, v in p["gets_per_iteration"].items()),
    ]
    for workers, c in p["clusters"].items():
        lines.append(
            f"* {workers} workers ({c['nodes']:.0f} nodes): network {c['network_seconds']:.0f} s, "
            f"CPU {c['cpu_seconds']:.0f} s: ~{c['iteration_seconds']:.0f} s per iteration "
            f"({c['bound_by']}-bound); GETs/s "
            + ", ".join(f"{k}: {v:,.0f}" for k, v in c["gets_per_second"].items())
        )
    return "\n".join(lines)
