"""A plain HTTP app that knows nothing of tandem, only Dapr's environment
(APP_PORT, DAPR_HTTP_PORT), as any Dapr app does. Its role is its first
argument:

- `caller`: calls `orders` and `payments` through its sidecar five times a
  second each (Dapr service invocation) and answers /healthz;
- `orders`: answers every method with 200;
- `payments`: /pay answers 500 (a failing endpoint), the rest 200.
"""
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

ROLE = sys.argv[1]
PORT = int(os.environ["APP_PORT"])
DAPR = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}"


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status = 500 if ROLE == "payments" and self.path.startswith("/pay") else 200
        body = json.dumps({"app": ROLE, "path": self.path}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = answer
    do_POST = answer

    def log_message(self, *args):
        pass


def call_forever():
    while True:
        for app, method in (("orders", "neworder"), ("payments", "pay")):
            req = urllib.request.Request(
                f"{DAPR}/v1.0/invoke/{app}/method/{method}",
                data=b'{"id": 1}',
                headers={"content-type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    r.read()
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.2)


if ROLE == "caller":
    threading.Thread(target=call_forever, daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
