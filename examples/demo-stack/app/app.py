"""Demo service: a tiny stdlib HTTP server that needs PyYAML.

Its requirements.txt forgets PyYAML, so it crashes at start-up with
ModuleNotFoundError until someone (the orchestrator) adds it.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

import yaml

PORT = int(os.environ.get("APP_PORT", "18080"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            status, body = 200, {"status": "ok", "yaml": yaml.__version__}
        else:
            status, body = 404, {"error": "not found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    print(f"app listening on 127.0.0.1:{PORT}", flush=True)
    HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
