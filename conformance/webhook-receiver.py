"""A webhook receiver for conformance scripts: verifies every delivery with the Standard
Webhooks reference library (PyPI `standardwebhooks`), appends what it accepted to a JSON
lines file, and answers 503 while a `fail` file exists next to it.

Usage: webhook-receiver.py PORT SECRET_FILE OUT_FILE
"""
import json
import time
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PORT = int(sys.argv[1])
SECRET = open(sys.argv[2]).read().strip()
OUT = sys.argv[3]
FAIL_FLAG = os.path.join(os.path.dirname(OUT), "fail")
HOOK = Webhook(SECRET)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            HOOK.verify(body, headers)
        except WebhookVerificationError as error:
            with open(OUT + ".bad", "a") as bad:
                bad.write(f"{error}\n")
            self.send_response(400)
            self.end_headers()
            return
        if os.path.exists(FAIL_FLAG):
            self.send_response(503)
            self.end_headers()
            return
        event = json.loads(body)
        with open(OUT, "a") as out:
            out.write(json.dumps({"id": headers["webhook-id"], "received_at": time.time(), **event}) + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
