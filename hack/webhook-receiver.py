#!/usr/bin/env python3
"""A LifecycleWebhook receiver: checks each request's signature, drops an
event it already has (delivery is at least once, so one may come twice with
the same id) and prints the rest, one line each. The demo runs it; copy it
as the start of your own (Python 3, standard library only).

    hack/webhook-receiver.py --port 8099 --key-file key.txt
"""
import argparse
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def signed(key: bytes, body: bytes, header: str) -> bool:
    """X-Tenure-Signature is sha256=<hex HMAC-SHA256 of the body>."""
    expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header or "")


class Receiver(BaseHTTPRequestHandler):
    seen = set()  # keep this in your database: ids survive restarts

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not signed(self.server.key, body, self.headers.get("X-Tenure-Signature")):
            self.send_response(401)  # not from tenure: tenure retries, and it shows in its status
            self.end_headers()
            return
        event = json.loads(body)
        if event["id"] not in self.seen:
            self.seen.add(event["id"])
            data = event["data"]
            print(f'{event["time"]}  {event["type"]}  {event.get("subject", "-")}: {data["message"]}',
                  flush=True)
        else:
            print(f'(again: {event["id"]}, dropped)', file=sys.stderr, flush=True)
        self.send_response(204)  # any 2xx: delivered
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--key-file", required=True, help="the HMAC key, as in the Secret")
    args = parser.parse_args()
    server = HTTPServer(("127.0.0.1", args.port), Receiver)
    with open(args.key_file, "rb") as key:
        server.key = key.read()  # every byte, as tenure reads the Secret's
    server.serve_forever()


if __name__ == "__main__":
    main()
