#!/usr/bin/env python3
"""Service invocation measured as users see it: an external load generator
(wrk) against an external app (nginx answering `ok`), through tandem's
sidecars and, in the same run, through a pair of nginx reverse proxies as
the reference. Nothing of the measuring side is ours.

Rows (each against calling the app directly, same run):
  healthz          GET /v1.0/healthz on a sidecar (the sidecar alone)
  one hop          the app through its own sidecar (/v1.0/invoke/<self>/...)
  two hops         caller's sidecar -> callee's sidecar -> app (plaintext h2)
  two hops mTLS    the same over mTLS 1.3
  nginx pair       nginx -> nginx -> app (HTTP/1.1 keepalive upstreams)

For each: sequential latency (wrk -t1 -c1: p50/p99/p99.9), max throughput at
1/16/64/256 connections, CPU of the proxies per 1000 req/s at 16
connections, and RSS with its private part (RssAnon) of each proxy after the
load, idle (before any load) and after it (256 connections' buffers
included).

Usage: python3 benches/external.py [seconds per measurement, default 5]
Builds the release binary first (cargo build --release); installs wrk and
nginx-light from Debian's packages when missing.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SECS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
BIN = os.path.join(TARGET, "release", "tandem")
CLK = os.sysconf("SC_CLK_TCK")

# wrk's Lua hook: the percentiles it keeps, in microseconds, on one line.
LUA = """
done = function(summary, latency, requests)
  io.write(string.format("PCT %d %d %d %d\\n", latency:percentile(50),
    latency:percentile(99), latency:percentile(99.9), summary.requests))
end
"""


def need(*packages):
    missing = [p for p in packages if shutil.which(p.split("-")[0]) is None]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if any(shutil.which(p.split("-")[0]) is None for p in missing):
            subprocess.run(["apt-get", "update"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                           check=True, stdout=subprocess.DEVNULL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, secs=20):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} never listened on {port}")


def nginx(tmp, name, body):
    d = os.path.join(tmp, name)
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    port = free_port()
    conf = f"""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log crit;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  {body.replace("PORT", str(port))}
}}
"""
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)
    p = subprocess.Popen(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, name)
    return p, port


def proxy_to(upstream):
    return f"""upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://up;
    proxy_http_version 1.1; proxy_set_header Connection ""; }} }}"""


def sidecar(tmp, app_id, app_port, extra=()):
    http, grpc, internal = free_port(), free_port(), free_port()
    res = os.path.join(tmp, "res")
    os.makedirs(res, exist_ok=True)
    args = [BIN, "sidecar", "--app-id", app_id, "--dapr-http-port", str(http),
            "--dapr-grpc-port", str(grpc), "--dapr-internal-grpc-port", str(internal),
            "--resources-path", res, "--log-level", "error", "--enable-metrics=false", *extra]
    if app_port:
        args += ["--app-port", str(app_port)]
    env = dict(os.environ, TANDEM_HOME=os.path.join(tmp, "home"))
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(http, app_id)
    return p, http


def cpu_secs(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK


def memory(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                out[k] = int(v.split()[0]) / 1024
    return out


def children(pid):
    """nginx's workers with their master."""
    out = [pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except OSError:
                pass
    return out


def wrk(url, conns, lua):
    threads = 1 if conns == 1 else 2
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{SECS}s", "-s", lua, url],
                         capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("PCT "))
    p50, p99, p999, n = (int(x) for x in line.split()[1:])
    errors = [l for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l]
    if errors:
        raise SystemExit(f"{url}: {errors}")
    return p50, p99, p999, n / SECS


def main():
    need("wrk", "nginx-light")
    subprocess.run(["cargo", "build", "--release", "--bin", "tandem"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="tandem-external-")
    lua = os.path.join(tmp, "pct.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    procs = []
    try:
        app, app_port = nginx(tmp, "app", """server { listen 127.0.0.1:PORT;
    location / { return 200 "ok"; } }""")
        procs.append(app)
        nb, nb_port = nginx(tmp, "nginx-b", proxy_to(app_port))
        na, na_port = nginx(tmp, "nginx-a", proxy_to(nb_port))
        procs += [nb, na]
        orders, orders_http = sidecar(tmp, "orders", app_port)
        shop, shop_http = sidecar(tmp, "shop", None)
        orders_tls, _ = sidecar(tmp, "orders-tls", app_port, ["--enable-mtls"])
        shop_tls, shop_tls_http = sidecar(tmp, "shop-tls", None, ["--enable-mtls"])
        procs += [orders, shop, orders_tls, shop_tls]
        rows = [
            ("direct", f"http://127.0.0.1:{app_port}/hello", []),
            ("healthz", f"http://127.0.0.1:{shop_http}/v1.0/healthz", [shop.pid]),
            ("one hop", f"http://127.0.0.1:{orders_http}/v1.0/invoke/orders/method/hello",
             [orders.pid]),
            ("two hops", f"http://127.0.0.1:{shop_http}/v1.0/invoke/orders/method/hello",
             [shop.pid, orders.pid]),
            ("two hops mTLS",
             f"http://127.0.0.1:{shop_tls_http}/v1.0/invoke/orders-tls/method/hello",
             [shop_tls.pid, orders_tls.pid]),
            ("nginx pair", f"http://127.0.0.1:{na_port}/hello",
             children(na.pid) + children(nb.pid)),
        ]
        idle = {name: [memory(p) for p in pids[:2]] for name, _, pids in rows}
        for _, url, _ in rows:  # warm up: pools, connections, pages
            wrk_quick = ["wrk", "-t1", "-c4", "-d1s", url]
            subprocess.run(wrk_quick, capture_output=True, check=True)
        print(f"External clients (wrk {SECS} s per cell) against nginx answering `ok`; "
              f"latencies in µs; same run")
        print(f"{'path':<14} {'p50':>6} {'p99':>6} {'p99.9':>6} {'+p50':>6} {'+p99':>6} |"
              f" {'req/s c1':>9} {'c16':>8} {'c64':>8} {'c256':>8} | {'cpu/1k':>7}"
              f" | RSS (private) MiB per proxy: idle -> after the load")
        results = {}
        for name, url, pids in rows:
            p50, p99, p999, rps1 = wrk(url, 1, lua)
            rps = {}
            cpu = None
            for c in (16, 64, 256):
                before = cpu_secs(pids) if pids else 0
                _, _, _, rps[c] = wrk(url, c, lua)
                if c == 16 and pids:
                    cpu = (cpu_secs(pids) - before) / SECS / (rps[c] / 1000)
            results[name] = (p50, p99, p999, rps1, rps, cpu)
            base = results["direct"]
            mem = "  ".join(
                f"{i['VmRSS']:.1f} ({i['RssAnon']:.1f}) -> {m['VmRSS']:.1f} ({m['RssAnon']:.1f})"
                for i, m in zip(idle[name], (memory(p) for p in pids[:2]))
            )
            print(f"{name:<14} {p50:>6} {p99:>6} {p999:>6} {p50 - base[0]:>+6} {p99 - base[1]:>+6} |"
                  f" {rps1:>9.0f} {rps[16]:>8.0f} {rps[64]:>8.0f} {rps[256]:>8.0f} |"
                  f" {'' if cpu is None else f'{cpu:.3f}':>7} | {mem}")
        d, t, n = results["direct"], results["two hops"], results["nginx pair"]
        added = lambda r, i: r[i] - d[i]
        print(f"two sidecars vs the nginx pair: added p50 {added(t, 0) / max(added(n, 0), 1):.2f}x,"
              f" added p99 {added(t, 1) / max(added(n, 1), 1):.2f}x; throughput"
              f" c16 {t[4][16] / n[4][16]:.2f}x, c64 {t[4][64] / n[4][64]:.2f}x;"
              f" CPU per 1000 req/s {t[5] / n[5]:.2f}x")
        # Memory per idle client connection: 1000 keep-alive connections to
        # a fresh sidecar's HTTP API, each having made one request, then idle.
        fresh, fresh_http = sidecar(tmp, "idle", None)
        procs.append(fresh)
        pid = fresh.pid
        time.sleep(0.5)
        before = memory(pid)["RssAnon"]
        held = []
        for _ in range(1000):
            c = socket.create_connection(("127.0.0.1", fresh_http))
            c.sendall(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(c)
        for c in held:
            c.recv(4096)
        time.sleep(0.5)
        after = memory(pid)["RssAnon"]
        print(f"idle client connections: 1000 held by a sidecar cost"
              f" {(after - before) * 1024 / 1000:.1f} KiB private memory each"
              f" ({before:.1f} -> {after:.1f} MiB)")
        for c in held:
            c.close()
        m = results["two hops mTLS"]
        print(f"two sidecars over mTLS vs the nginx pair: added p50"
              f" {added(m, 0) / max(added(n, 0), 1):.2f}x, throughput c16 {m[4][16] / n[4][16]:.2f}x")
    finally:
        # SIGTERM: nginx's master stops its workers (SIGKILL would orphan
        # them, still running); the sidecars exit on it too.
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
