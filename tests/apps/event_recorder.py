"""A plain HTTP subscriber for tests that kill the app: serves
/dapr/subscribe from $SUBSCRIBE and appends the data of every event it is
given to the file $RECORD (one line each) before answering SUCCESS.
`event_recorder.py <port>`; each event takes $DELAY_MS milliseconds."""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORD = os.environ["RECORD"]
SUBSCRIBE = os.environ["SUBSCRIBE"].encode()
DELAY = int(os.environ.get("DELAY_MS", "0")) / 1000


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, body=b"{}"):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(SUBSCRIBE if self.path == "/dapr/subscribe" else b"{}")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(DELAY)
        try:
            data = json.loads(body).get("data")
        except ValueError:
            data = None
        if data is not None:
            with open(RECORD, "a") as f:
                f.write(f"{data}\n")
        self.reply(b'{"status":"SUCCESS"}')


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
