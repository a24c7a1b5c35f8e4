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

Further sections (same processes, same run):
  rates     fixed rates of 1000 and 5000 req/s (h2load --rps, HTTP/1.1):
            p50/p99/p99.9 and CPU of the proxies per 1000 req/s
  grpc      h2load over h2c: InvokeService through two sidecars (plaintext
            and mTLS) against HTTP invocation measured with the same client;
            gRPC proxying (dapr-app-id metadata) to a gRPC app (nginx
            answering every method with an empty message and grpc-status 0;
            an nginx grpc_pass pair in front of it is no reference: nginx
            as the app answers before reading the request, which its
            grpc_pass takes for a protocol error now and then)
  state     state get/save and publish through a sidecar (Redis components)
            against the raw Redis round trip (redis-benchmark, one client)
  scale     cost as work grows: bodies 1 KiB -> 16 MiB both ways (latency,
            MiB/s, each sidecar's peak private memory); 1 -> 10,000 idle
            client connections (private memory each, latency beside
            them); 1 -> 10,000 subscriptions (start-up, memory, publish);
            1 -> 1,000 apps in the local registry, a real sidecar each,
            called at random (latency, throughput, the caller's memory
            per peer connection, each app sidecar's private memory)

  crypto    a 1 GiB file encrypted and decrypted through a sidecar's HTTP
            API (throughput, RSS growth, peak private memory) against
            openssl enc on the same file (EXTERNAL_CRYPTO_MIB: its size)

Usage: python3 benches/external.py [seconds per measurement, default 5]
  EXTERNAL_ONLY=invoke,rates,grpc,state,scale,crypto picks sections (default: all);
  EXTERNAL_BASELINE_BIN=<another tandem binary> adds a row "two hops base":
  the same two-hop call through two sidecars of that binary, same run;
  EXTERNAL_NO_BUILD=1 uses the release binary as it is.
Builds the release binary first (cargo build --release); installs wrk,
h2load (nghttp2-client) and nginx-light from Debian's packages when missing.
"""

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

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


def need(**commands):
    """Installs the Debian package of each missing command (command=package)."""
    missing = [pkg for cmd, pkg in commands.items() if shutil.which(cmd) is None]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if any(shutil.which(cmd) is None for cmd in commands):
            subprocess.run(["apt-get", "update"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                           check=True, stdout=subprocess.DEVNULL)


GIVEN = set()


def free_port():
    """A port nothing listens on and this run has not handed out (sidecars
    started without waiting bind theirs later)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in GIVEN:
            GIVEN.add(port)
            return port


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
  keepalive_requests 1000000000;
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


def proxy_to(upstream, streaming=False):
    """An nginx reverse proxy to `upstream`; `streaming`: answers pass
    through as they come instead of being buffered whole (to temp files
    past a few KiB), as the sidecars pass them. Requests stay buffered:
    unbuffered, nginx cannot resend one when its keep-alive upstream
    connection closes under it, and a few in a hundred fail with 502."""
    stream = "proxy_buffering off;" if streaming else ""
    return f"""upstream up {{ server 127.0.0.1:{upstream}; keepalive 64;
    keepalive_requests 1000000000; }}
  server {{ listen 127.0.0.1:PORT; client_max_body_size 0;
    location / {{ proxy_pass http://up; {stream}
    proxy_http_version 1.1; proxy_set_header Connection ""; }} }}"""


def sidecar(tmp, app_id, app_port, extra=(), components=None, binary=None, wait=True):
    """A sidecar for `app_id`; `components`: YAML of its own resources
    folder (else an empty one shared by all). Returns (process, HTTP port,
    gRPC port)."""
    http, grpc, internal = free_port(), free_port(), free_port()
    res = os.path.join(tmp, "res" if components is None else f"res-{app_id}")
    os.makedirs(res, exist_ok=True)
    if components is not None:
        with open(os.path.join(res, "components.yaml"), "w") as f:
            f.write(components)
    args = [binary or BIN, "sidecar", "--app-id", app_id, "--dapr-http-port", str(http),
            "--dapr-grpc-port", str(grpc), "--dapr-internal-grpc-port", str(internal),
            "--resources-path", res, "--log-level", "error", "--enable-metrics=false", *extra]
    if app_port:
        args += ["--app-port", str(app_port)]
    env = dict(os.environ, TANDEM_HOME=os.path.join(tmp, "home"))
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if wait:
        wait_port(http, app_id)
        wait_port(grpc, app_id)
    return p, http, grpc


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


def h2load(url, conns, extra=(), rps=None, secs=None):
    """h2load (HTTP/2 over h2c unless `--h1` is in `extra`), one stream at a
    time per connection. With `rps`, a fixed rate per connection (h2load
    paces a connection at 500 req/s at most) for `secs`; else as fast as it
    goes, for about `secs` (a request count from a short first run: in
    timed mode h2load paces HTTP/2 connections at 500 req/s). Returns (p50,
    p99, p99.9 in µs, req/s, data bytes received per answer)."""
    secs = secs or SECS
    if rps:
        return h2load_once(url, conns, extra, ["-D", str(secs), "--rps", str(rps)])
    first = h2load_once(url, conns, extra, ["-n", str(max(1000, 200 * conns))])
    return h2load_once(url, conns, extra, ["-n", str(max(conns, int(first[3] * secs)))])


def h2load_once(url, conns, extra, mode):
    with tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log") as log:
        args = ["h2load", "-c", str(conns), "-m1", "--log-file", log.name, *mode, *extra, url]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        times = sorted(int(l.split("\t")[2]) for l in open(log.name) if l.strip())
    line = lambda start: next(l for l in out.splitlines() if l.startswith(start))
    done, codes = line("requests:"), line("status codes:")
    total, ok = int(done.split()[1]), int(codes.split()[2])
    if total == 0 or ok != total or " 0 failed, 0 errored" not in done:
        raise SystemExit(f"{url}: {done} / {codes}")
    data = int(line("traffic:").rsplit("(", 1)[1].split(")")[0])
    took = line("finished in").split()[2].rstrip(",")
    took = float(took[:-2]) / 1000 if took.endswith("ms") else float(took[:-1])
    pct = lambda q: times[min(len(times) - 1, int(len(times) * q))]
    return pct(0.50), pct(0.99), pct(0.999), total / took, data / total


def grpc_frame(message):
    return b"\0" + len(message).to_bytes(4, "big") + message


def pb_bytes(field, value):
    """A length-delimited protobuf field (lengths < 128 here)."""
    assert len(value) < 128
    return bytes([field << 3 | 2, len(value)]) + value


def invoke_service_request(app_id, method):
    """InvokeServiceRequest{id, message: InvokeRequest{method,
    http_extension{verb: GET}}} as a gRPC message."""
    http_ext = bytes([1 << 3 | 0, 1])  # verb = GET
    message = pb_bytes(1, method.encode()) + pb_bytes(4, http_ext)
    return grpc_frame(pb_bytes(1, app_id.encode()) + pb_bytes(3, message))


class Run:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.lua = os.path.join(tmp, "pct.lua")
        with open(self.lua, "w") as f:
            f.write(LUA)

    def nginx(self, name, body):
        p, port = nginx(self.tmp, name, body)
        self.procs.append(p)
        return p, port

    def sidecar(self, *args, **kw):
        out = sidecar(self.tmp, *args, **kw)
        self.procs.append(out[0])
        return out

    def stop(self):
        # SIGTERM: nginx's master stops its workers (SIGKILL would orphan
        # them, still running); the sidecars exit on it too.
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def invoke_section(run, app_port, rows):
    idle = {name: [memory(p) for p in pids[:2]] for name, _, pids in rows}
    for _, url, _ in rows:  # warm up: pools, connections, pages
        subprocess.run(["wrk", "-t1", "-c4", "-d1s", url], capture_output=True, check=True)
    print(f"External clients (wrk {SECS} s per cell) against nginx answering `ok`; "
          f"latencies in µs; same run")
    print(f"{'path':<14} {'p50':>6} {'p99':>6} {'p99.9':>6} {'+p50':>6} {'+p99':>6} |"
          f" {'req/s c1':>9} {'c16':>8} {'c64':>8} {'c256':>8} | {'cpu/1k':>7}"
          f" | RSS (private) MiB per proxy: idle -> after the load")
    results = {}
    for name, url, pids in rows:
        p50, p99, p999, rps1 = wrk(url, 1, run.lua)
        rps = {}
        cpu = None
        for c in (16, 64, 256):
            before = cpu_secs(pids) if pids else 0
            _, _, _, rps[c] = wrk(url, c, run.lua)
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
    m = results["two hops mTLS"]
    print(f"two sidecars over mTLS vs the nginx pair: added p50"
          f" {added(m, 0) / max(added(n, 0), 1):.2f}x, added p99"
          f" {added(m, 1) / max(added(n, 1), 1):.2f}x, throughput c16 {m[4][16] / n[4][16]:.2f}x")
    if "two hops base" in results:
        b = results["two hops base"]
        print(f"two sidecars of this binary vs the baseline binary's: added p50"
              f" {added(t, 0):+} against {added(b, 0):+} µs, p99 {added(t, 1):+} against"
              f" {added(b, 1):+} µs; throughput c16 {t[4][16] / b[4][16]:.2f}x,"
              f" c64 {t[4][64] / b[4][64]:.2f}x; CPU per 1000 req/s {t[5] / b[5]:.2f}x")


def rates_section(rows):
    print()
    print(f"Fixed rates (h2load --h1 --rps, {SECS} s per cell); latencies in µs; same run")
    print(f"{'path':<14} | {'1000 req/s: p50':>15} {'p99':>6} {'p99.9':>6} |"
          f" {'5000 req/s: p50':>15} {'p99':>6} {'p99.9':>6} | {'cpu/1k at 5k':>12}")
    for name, url, pids in rows:
        if name in ("healthz", "one hop"):
            continue
        cells = []
        cpu = None
        for conns in (2, 10):  # 500 req/s per connection
            before = cpu_secs(pids) if pids else 0
            p50, p99, p999, rps, _ = h2load(url, conns, ["--h1"], rps=500)
            if conns == 10 and pids:
                cpu = (cpu_secs(pids) - before) / SECS / (rps / 1000)
            cells.append(f"{p50:>15} {p99:>6} {p999:>6}")
        print(f"{name:<14} | {cells[0]} | {cells[1]} | {'' if cpu is None else f'{cpu:.3f}':>12}")


def grpc_section(run, app_port, shop, shop_grpc, shop_http, shop_tls, shop_tls_grpc, orders,
                 orders_tls):
    print()
    print(f"gRPC (h2load over h2c, {SECS} s per cell, one stream at a time per connection);"
          f" latencies in µs; same run")
    # A gRPC app: nginx answering every method with an empty message.
    reply = os.path.join(run.tmp, "grpc-reply")
    os.makedirs(reply, exist_ok=True)
    os.chmod(run.tmp, 0o755)  # nginx's workers run as an unprivileged user
    with open(os.path.join(reply, "reply.bin"), "wb") as f:
        f.write(grpc_frame(b""))
    gapp, gapp_port = run.nginx("grpc-app", f"""server {{ listen 127.0.0.1:PORT http2;
    location / {{ default_type application/grpc; add_trailer grpc-status 0;
      root {reply}; try_files /reply.bin =404; error_page 405 =200 $uri; }} }}""")
    gorders, _, _ = run.sidecar("orders-grpc", gapp_port, ["--app-protocol", "grpc"])
    body = os.path.join(run.tmp, "invoke.bin")
    with open(body, "wb") as f:
        f.write(invoke_service_request("orders", "hello"))
    body_tls = os.path.join(run.tmp, "invoke-tls.bin")
    with open(body_tls, "wb") as f:
        f.write(invoke_service_request("orders-tls", "hello"))
    empty = os.path.join(run.tmp, "empty.bin")
    with open(empty, "wb") as f:
        f.write(grpc_frame(b""))
    grpc_h = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    invoke_path = "/dapr.proto.runtime.v1.Dapr/InvokeService"
    rows = [
        # (name, url, h2load args, proxies, minimum data bytes per answer)
        ("HTTP direct", f"http://127.0.0.1:{app_port}/hello", ["--h1"], [], 2),
        ("HTTP two hops", f"http://127.0.0.1:{shop_http}/v1.0/invoke/orders/method/hello",
         ["--h1"], [shop.pid, orders.pid], 2),
        ("InvokeService", f"http://127.0.0.1:{shop_grpc}{invoke_path}",
         ["-d", body, *grpc_h], [shop.pid, orders.pid], 7),
        ("InvokeSvc mTLS", f"http://127.0.0.1:{shop_tls_grpc}{invoke_path}",
         ["-d", body_tls, *grpc_h], [shop_tls.pid, orders_tls.pid], 7),
        ("gRPC direct", f"http://127.0.0.1:{gapp_port}/bench.Echo/Call",
         ["-d", empty, *grpc_h], [], 5),
        ("gRPC proxied", f"http://127.0.0.1:{shop_grpc}/bench.Echo/Call",
         ["-d", empty, *grpc_h, "-H", "dapr-app-id: orders-grpc"], [shop.pid, gorders.pid], 5),
    ]
    print(f"{'path':<15} {'p50':>6} {'p99':>6} {'p99.9':>6} |"
          f" {'req/s c1':>9} {'c16':>8} {'c64':>8} | {'cpu/1k':>7}")
    results = {}
    for name, url, extra, pids, min_data in rows:
        h2load(url, 4, extra, secs=1)  # warm up
        p50, p99, p999, rps1, data = h2load(url, 1, extra)
        # A gRPC error is a 200 too, but carries no message: every answer
        # must have brought its message.
        if data < min_data:
            raise SystemExit(f"{name}: answers without their message ({data:.1f} bytes each)")
        rps = {}
        cpu = None
        for c in (16, 64):
            before = cpu_secs(pids) if pids else 0
            rps[c] = h2load(url, c, extra)[3]
            if c == 16 and pids:
                cpu = (cpu_secs(pids) - before) / SECS / (rps[c] / 1000)
        results[name] = (p50, p99, p999, rps1, rps, cpu)
        print(f"{name:<15} {p50:>6} {p99:>6} {p999:>6} | {rps1:>9.0f} {rps[16]:>8.0f}"
              f" {rps[64]:>8.0f} | {'' if cpu is None else f'{cpu:.3f}':>7}")
    r = results
    added = lambda row, base, i: r[row][i] - r[base][i]
    http_added = max(added("HTTP two hops", "HTTP direct", 0), 1)
    print(f"InvokeService adds {added('InvokeService', 'HTTP direct', 0):+} µs p50 ="
          f" {added('InvokeService', 'HTTP direct', 0) / http_added:.2f}x what HTTP invocation"
          f" adds ({http_added:+} µs); gRPC proxying adds"
          f" {added('gRPC proxied', 'gRPC direct', 0):+} µs ="
          f" {added('gRPC proxied', 'gRPC direct', 0) / http_added:.2f}x")


STORE = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisHost
    value: 127.0.0.1:6379
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.redis
  version: v1
  metadata:
  - name: redisHost
    value: 127.0.0.1:6379
  - name: maxLenApprox
    value: "1000"
"""


def redis_p50(*command):
    """p50 and p99 in µs of one Redis client sending `command` (redis-benchmark)."""
    out = subprocess.run(["redis-benchmark", "-n", str(4000 * SECS), "-c", "1", "--csv",
                          *command], capture_output=True, text=True, check=True).stdout
    row = out.strip().splitlines()[-1].replace('"', "").split(",")
    return round(float(row[-4]) * 1000), round(float(row[-2]) * 1000)


def state_section(run):
    print()
    print("State and publish through a sidecar (wrk -c1) against the raw Redis round trip"
          " (redis-benchmark -c1); µs; same run")
    if subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True).returncode:
        print("  Redis is not running on 127.0.0.1:6379 (scripts/services.sh starts it): skipped")
        return
    store, store_http, _ = run.sidecar("store", None, components=STORE)
    base = f"http://127.0.0.1:{store_http}"
    save = os.path.join(run.tmp, "save.lua")
    with open(save, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = \'[{"key":"bench","value":"v"}]\'\n'
                'wrk.headers["Content-Type"] = "application/json"\n' + LUA)
    publish = os.path.join(run.tmp, "publish.lua")
    with open(publish, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = \'{"a":1}\'\n'
                'wrk.headers["Content-Type"] = "application/json"\n' + LUA)
    subprocess.run(["wrk", "-t1", "-c1", "-d1s", "-s", save, f"{base}/v1.0/state/statestore"],
                   capture_output=True, check=True)
    rows = [
        ("save", f"{base}/v1.0/state/statestore", save, ("SET", "bench-raw", "v")),
        ("get", f"{base}/v1.0/state/statestore/bench", run.lua, ("GET", "bench-raw")),
        ("publish", f"{base}/v1.0/publish/pubsub/bench", publish,
         ("XADD", "bench-raw-stream", "MAXLEN", "~", "1000", "*", "data", "x")),
    ]
    print(f"{'operation':<10} {'sidecar p50':>11} {'p99':>6} | {'Redis p50':>9} {'p99':>6} |"
          f" {'added p50':>9} | req/s c16")
    for name, url, lua, command in rows:
        p50, p99, _, _ = wrk(url, 1, lua)
        r50, r99 = redis_p50(*command)
        rps = wrk(url, 16, lua)[3]
        print(f"{name:<10} {p50:>11} {p99:>6} | {r50:>9} {r99:>6} | {p50 - r50:>+9} | {rps:.0f}")


class PeakMemory:
    """The largest private memory (RssAnon, MiB) each of `pids` reaches
    while the block runs, sampled every 2 ms."""

    def __init__(self, pids):
        self.pids = pids
        self.peak = {pid: 0.0 for pid in pids}
        self.peak_rss = {pid: 0.0 for pid in pids}
        self.running = True

    def sample(self):
        while self.running:
            for pid in self.pids:
                m = memory(pid)
                self.peak[pid] = max(self.peak[pid], m["RssAnon"])
                self.peak_rss[pid] = max(self.peak_rss[pid], m["VmRSS"])
            time.sleep(0.002)

    def __enter__(self):
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def lua_file(run, name, text):
    path = os.path.join(run.tmp, name)
    with open(path, "w") as f:
        f.write(text + LUA)
    return path


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read() or b"null")


def wait_healthy(port, what, secs=60):
    end = time.time() + secs
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1.0/healthz", timeout=1) as r:
                if r.status == 204:
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"{what} never became healthy")


def scale_connections(run):
    """1 -> 10,000 idle keep-alive client connections, each having made
    one request, held on a fresh sidecar's HTTP API: its private memory
    and a sequential request's latency beside them."""
    print()
    print(f"Idle client connections held on one sidecar (each made one request);"
          f" healthz latency beside them (wrk -c1); same run")
    print(f"{'connections':>11} | {'private MiB':>11} {'KiB per connection':>18} |"
          f" {'healthz p50':>11} {'p99':>6}")
    fresh, port, _ = run.sidecar("idle", None)
    time.sleep(0.5)
    base = memory(fresh.pid)["RssAnon"]
    held = []
    for n in (1, 100, 1000, 10000):
        while len(held) < n:
            batch = []
            for _ in range(min(500, n - len(held))):
                c = socket.create_connection(("127.0.0.1", port))
                c.sendall(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                batch.append(c)
            for c in batch:
                if not c.recv(4096).startswith(b"HTTP/1.1 204"):
                    raise SystemExit("healthz did not answer 204 on a held connection")
            held += batch
        time.sleep(0.5)
        now = memory(fresh.pid)["RssAnon"]
        p50, p99, _, _ = wrk(f"http://127.0.0.1:{port}/v1.0/healthz", 1, run.lua)
        print(f"{n:>11} | {now:>11.1f} {(now - base) * 1024 / n:>18.1f} | {p50:>11} {p99:>6}")
    for c in held:
        c.close()


def scale_apps(run, app_port):
    """1 -> 1,000 apps in the local registry, each a real sidecar (all in
    front of the one nginx app): one caller's sidecar calls them at
    random. Its private memory per peer it has called (pooled connection,
    resolver and pool entries) and the callees' private memory each."""
    print()
    print("Apps in the local registry (one sidecar each, no load on them but ours);"
          " a caller invokes one at random (wrk); µs; same run")
    print(f"{'apps':>5} | {'p50':>6} {'p99':>6} {'req/s c16':>9} | {'app-0 p50':>9} |"
          f" {'caller private MiB':>18} {'KiB per peer':>12} | {'private MiB per app':>19}")
    caller, caller_http, _ = run.sidecar("caller", None)
    time.sleep(0.3)
    base = memory(caller.pid)["RssAnon"]
    apps = []
    for n in (1, 10, 100, 1000):
        while len(apps) < n:
            batch = [sidecar(run.tmp, f"app-{len(apps) + i}", app_port, wait=False)
                     for i in range(min(50, n - len(apps)))]
            for p, http, _ in batch:
                run.procs.append(p)
                wait_healthy(http, "an app's sidecar")
            apps += batch
        for i in range(n):  # every peer called once: a pooled connection each
            url = f"http://127.0.0.1:{caller_http}/v1.0/invoke/app-{i}/method/hello"
            with urllib.request.urlopen(url, timeout=10) as r:
                if r.read() != b"ok":
                    raise SystemExit(f"app-{i} did not answer")
        lua = lua_file(run, f"apps{n}.lua", f"""
request = function()
  return wrk.format(nil, "/v1.0/invoke/app-" .. math.random(0, {n - 1}) .. "/method/hello")
end
""")
        url = f"http://127.0.0.1:{caller_http}/"
        p50, p99, _, _ = wrk(url, 1, lua)
        rps = wrk(url, 16, lua)[3]
        # The same caller and registry, always the first app: what the
        # registry's size costs, apart from spreading calls over processes.
        one = wrk(f"{url}v1.0/invoke/app-0/method/hello", 1, run.lua)[0]
        now = memory(caller.pid)["RssAnon"]
        each = sum(memory(p.pid)["RssAnon"] for p, _, _ in apps) / n
        print(f"{n:>5} | {p50:>6} {p99:>6} {rps:>9.0f} | {one:>9} | {now:>18.1f}"
              f" {(now - base) * 1024 / n:>12.1f} | {each:>19.2f}")
    for p, _, _ in apps:
        p.terminate()
    for p, _, _ in apps:
        p.wait()
        run.procs.remove(p)


def scale_subscriptions(run):
    """1 -> 10,000 subscriptions declared by an app (GET /dapr/subscribe,
    an in-memory pub/sub): the sidecar's start-up time to healthz, its
    private memory, and publishing to one of the topics."""
    print()
    print("Subscriptions declared by an app (pubsub.in-memory); a fresh sidecar each; same run")
    print(f"{'subscriptions':>13} | {'start-up ms':>11} | {'private MiB':>11} |"
          f" {'publish p50 µs':>14} {'p99':>6} {'req/s c16':>9}")
    component = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
"""
    publish = lua_file(run, "publish-mem.lua", 'wrk.method = "POST"\nwrk.body = \'{"a":1}\'\n'
                       'wrk.headers["Content-Type"] = "application/json"\n')
    for n in (1, 100, 1000, 10000):
        d = os.path.join(run.tmp, f"subs{n}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "subscribe.json"), "w") as f:
            json.dump([{"pubsubname": "pubsub", "topic": f"t-{i}", "route": "/t"}
                       for i in range(n)], f)
        app, app_port = run.nginx(f"subs-app-{n}", f"""server {{ listen 127.0.0.1:PORT;
    location = /dapr/subscribe {{ default_type application/json; alias {d}/subscribe.json; }}
    location / {{ return 200 ""; }} }}""")
        start = time.time()
        p, http, _ = sidecar(run.tmp, f"subs-{n}", app_port, components=component, wait=False)
        run.procs.append(p)
        wait_healthy(http, "the subscriber's sidecar")
        took = (time.time() - start) * 1000
        got = len(get_json(f"http://127.0.0.1:{http}/v1.0/metadata").get("subscriptions") or [])
        if got != n:
            raise SystemExit(f"the sidecar lists {got} subscriptions, the app declared {n}")
        private = memory(p.pid)["RssAnon"]
        url = f"http://127.0.0.1:{http}/v1.0/publish/pubsub/t-{n - 1}"
        p50, p99, _, _ = wrk(url, 1, publish)
        rps = wrk(url, 16, publish)[3]
        print(f"{n:>13} | {took:>11.0f} | {private:>11.1f} | {p50:>14} {p99:>6} {rps:>9.0f}")
        for proc in (p, app):
            proc.terminate()
            proc.wait()
            run.procs.remove(proc)


def scale_bodies(run, app_port, blobs):
    """1 KiB -> 16 MiB bodies, answers (GET of a file nginx serves) and
    requests (POST that nginx reads whole before it answers: its mirror
    module with the body, else `return` answers first), direct, through
    two sidecars and through an nginx pair that streams answers as the
    sidecars do (requests it buffers): sequential latency, MiB/s and
    the largest private memory of each sidecar during the row (streaming:
    it must not grow with the body)."""
    print()
    print(f"Bodies, one at a time (answers: wrk, {SECS} s per cell; requests: h2load, 256 MiB"
          f" or 20 requests per cell); sidecars with --max-body-size 32Mi;"
          f" peak private MiB of each sidecar while the row ran; same run")
    orders, _, _ = run.sidecar("orders-big", app_port, ["--max-body-size", "32Mi"])
    shop, shop_http, _ = run.sidecar("shop-big", None, ["--max-body-size", "32Mi"])
    nb, nb_port = run.nginx("nginx-big-b", proxy_to(app_port, streaming=True))
    na, na_port = run.nginx("nginx-big-a", proxy_to(nb_port, streaming=True))
    paths = [("direct", f"http://127.0.0.1:{app_port}"),
             ("two hops", f"http://127.0.0.1:{shop_http}/v1.0/invoke/orders-big/method"),
             ("nginx pair", f"http://127.0.0.1:{na_port}")]
    time.sleep(0.3)
    idle = [memory(p.pid)["RssAnon"] for p in (shop, orders)]
    print(f"idle private MiB: caller's sidecar {idle[0]:.1f}, callee's {idle[1]:.1f}")
    print(f"{'body':<14} | " + " | ".join(f"{name + ' p50 ms':>17} {'MiB/s':>6}"
                                          for name, _ in paths) + " | peak private MiB")
    for size, label in blobs:
        for way in ("answer", "request"):
            if way == "request":
                # wrk stalls on bodies of megabytes (one 16 MiB POST in 4 s
                # where curl sends 80): h2load sends them, a fixed count.
                data = os.path.join(run.tmp, f"post{label}")
                with open(data, "wb") as f:
                    f.write(b"x" * size)
                count = str(max(20, min(4000, (256 << 20) // size)))
            cells = []
            with PeakMemory([shop.pid, orders.pid]) as peak:
                for _, base in paths:
                    if way == "answer":
                        p50, _, _, rps = wrk(f"{base}/blob/{label}", 1, run.lua)
                    else:
                        p50, _, _, rps, _ = h2load_once(f"{base}/sink", 1,
                                                        ["--h1", "-d", data], ["-n", count])
                    cells.append(f"{p50 / 1000:>17.2f} {rps * size / 2**20:>6.0f}")
            print(f"{label + ' ' + way:<14} | " + " | ".join(cells) +
                  f" | {peak.peak[shop.pid]:.1f}  {peak.peak[orders.pid]:.1f}")


def scale_section(run):
    os.chmod(run.tmp, 0o755)  # nginx's workers (nobody) read the files below
    blobs = [(1 << 10, "1KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB"), (16 << 20, "16MiB")]
    d = os.path.join(run.tmp, "blobs", "blob")
    os.makedirs(d, exist_ok=True)
    for size, label in blobs:
        with open(os.path.join(d, label), "wb") as f:
            f.write(os.urandom(size))
    _, app_port = run.nginx("scale-app", f"""server {{ listen 127.0.0.1:PORT;
    client_max_body_size 0;
    location /blob/ {{ root {os.path.dirname(d)}; }}
    location = /sink {{ client_body_buffer_size 32m; mirror /drop; mirror_request_body on;
      return 200 "ok"; }}
    location = /drop {{ internal; return 204; }}
    location / {{ return 200 "ok"; }} }}""")
    scale_bodies(run, app_port, blobs)
    scale_connections(run)
    scale_subscriptions(run)
    scale_apps(run, app_port)


def timed(cmd):
    """Runs `cmd`; returns (seconds, stdout)."""
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, out


def crypto_section(run):
    """A large file encrypted and decrypted through a sidecar's HTTP API
    (crypto.dapr.localstorage, AES key wrap, AES-256-GCM segments) with the
    sidecar's memory sampled, beside `openssl enc -aes-256-ctr` on the same
    file (openssl's `enc` has no GCM) in the same run."""
    mib = int(os.environ.get("EXTERNAL_CRYPTO_MIB", "1024"))
    need(curl="curl", openssl="openssl")
    plain = os.path.join(run.tmp, "plain.bin")
    sealed = os.path.join(run.tmp, "sealed.bin")
    subprocess.run(["openssl", "rand", "-out", plain, str(mib << 20)], check=True)
    keys = os.path.join(run.tmp, "crypto-keys")
    os.makedirs(keys, exist_ok=True)
    with open(os.path.join(keys, "aes"), "wb") as f:
        f.write(os.urandom(32))
    # Bodies this large need the limit raised, as with daprd.
    p, http, _ = run.sidecar("cryptoapp", None, ["--max-body-size", "4Gi"], components=f"""apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: keys
spec:
  type: crypto.dapr.localstorage
  version: v1
  metadata:
  - name: path
    value: {keys}
""")
    key, iv = os.urandom(32).hex(), os.urandom(16).hex()
    ssl_enc, _ = timed(["openssl", "enc", "-aes-256-ctr", "-K", key, "-iv", iv, "-in", plain,
                        "-out", sealed + ".ctr"])
    ssl_dec, _ = timed(["openssl", "enc", "-d", "-aes-256-ctr", "-K", key, "-iv", iv, "-in",
                        sealed + ".ctr", "-out", "/dev/null"])
    os.remove(sealed + ".ctr")
    idle = memory(p.pid)
    url = f"http://127.0.0.1:{http}/v1.0-alpha1/crypto/keys"
    with PeakMemory([p.pid]) as enc_mem:
        enc_s, _ = timed(["curl", "-sf", "-X", "PUT", "-T", plain,
                          "-H", "dapr-key-name: aes", "-H", "dapr-key-wrap-algorithm: AES",
                          "-o", sealed, f"{url}/encrypt"])
    with PeakMemory([p.pid]) as dec_mem:
        dec_s, size = timed(["curl", "-sf", "-X", "PUT", "-T", sealed,
                             "-o", "/dev/null", "-w", "%{size_download}", f"{url}/decrypt"])
    assert int(size) == mib << 20, f"decrypted {size} bytes of {mib} MiB"
    os.remove(plain)
    os.remove(sealed)
    print(f"\nEncrypt/decrypt {mib} MiB through a sidecar (HTTP, curl; AES key wrap, "
          "AES-256-GCM) against openssl enc -aes-256-ctr on the same file; same run")
    print(f"{'':10} {'sidecar MiB/s':>14} {'openssl MiB/s':>14} {'ratio':>6} | "
          f"{'RSS growth MiB':>15} {'peak private MiB':>17}")
    for name, secs, ssl, mem in (("encrypt", enc_s, ssl_enc, enc_mem),
                                 ("decrypt", dec_s, ssl_dec, dec_mem)):
        print(f"{name:10} {mib / secs:14.0f} {mib / ssl:14.0f} {ssl / secs:6.2f} | "
              f"{mem.peak_rss[p.pid] - idle['VmRSS']:15.1f} {mem.peak[p.pid]:17.1f}")
    print(f"(idle: {idle['VmRSS']:.1f} MiB RSS, {idle['RssAnon']:.1f} MiB private)")


def main():
    only = set((os.environ.get("EXTERNAL_ONLY") or "invoke,rates,grpc,state,scale,crypto")
               .split(","))
    # 10,000 held connections (and 1,000 sidecars) need descriptors.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need(wrk="wrk", nginx="nginx-light", h2load="nghttp2-client")
    if not os.environ.get("EXTERNAL_NO_BUILD"):  # a binary built already
        subprocess.run(["cargo", "build", "--release", "--bin", "tandem"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="tandem-external-")
    run = Run(tmp)
    try:
        app, app_port = run.nginx("app", """server { listen 127.0.0.1:PORT;
    location / { return 200 "ok"; } }""")
        nb, nb_port = run.nginx("nginx-b", proxy_to(app_port))
        na, na_port = run.nginx("nginx-a", proxy_to(nb_port))
        orders, orders_http, _ = run.sidecar("orders", app_port)
        shop, shop_http, shop_grpc = run.sidecar("shop", None)
        orders_tls, _, _ = run.sidecar("orders-tls", app_port, ["--enable-mtls"])
        shop_tls, shop_tls_http, shop_tls_grpc = run.sidecar("shop-tls", None,
                                                             ["--enable-mtls"])
        # EXTERNAL_BASELINE_BIN: another tandem binary (an older commit,
        # say) whose two-hop pair is measured beside this one's.
        baseline = os.environ.get("EXTERNAL_BASELINE_BIN")
        base_rows = []
        if baseline:
            base_orders, _, _ = run.sidecar("orders-base", app_port, binary=baseline)
            base_shop, base_http, _ = run.sidecar("shop-base", None, binary=baseline)
            base_rows = [("two hops base",
                          f"http://127.0.0.1:{base_http}/v1.0/invoke/orders-base/method/hello",
                          [base_shop.pid, base_orders.pid])]
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
        ] + base_rows
        if "invoke" in only:
            invoke_section(run, app_port, rows)
        if "rates" in only:
            rates_section(rows)
        if "grpc" in only:
            grpc_section(run, app_port, shop, shop_grpc, shop_http, shop_tls, shop_tls_grpc,
                         orders, orders_tls)
        if "state" in only:
            state_section(run)
        if "scale" in only:
            scale_section(run)
        if "crypto" in only:
            crypto_section(run)
    finally:
        run.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
