"""An HTTP proxy in front of the Cloud Storage emulator or the S3 server, for what
they lack.

- `flaky_every=N`: every N-th request is answered 429 or 503 before it reaches
  the emulator, the way Cloud Storage sheds load; the client must retry. With
  `s3=True` the answers are S3's own, 503 SlowDown and 500 InternalError.
- `strip_headers=(...)`: those request headers are dropped before forwarding: an
  S3-compatible endpoint that ignores `If-None-Match` / `If-Match`.
- `preconditions=True`: the JSON API's `ifGenerationMatch` on object uploads.
  gcp-storage-emulator ignores it (it accepts every write), so the proxy
  enforces it as Cloud Storage documents: under one lock it reads the object's
  current generation (0 when absent) from the emulator, answers 412
  conditionNotMet when it differs, and otherwise forwards the upload. The
  object name comes from the `name` query parameter or, for multipart uploads,
  from the JSON metadata part of the body.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request

UPLOAD_PATH = re.compile(r"^/upload/storage/v1/b/([^/]+)/o$")


def object_name(query: dict, body: bytes | None, content_type: str) -> str | None:
    if query.get("name"):
        return query["name"][0]
    if body and "multipart" in content_type:
        for part in body.split(b"\r\n\r\n")[1:2]:  # headers, then the metadata JSON
            try:
                return json.loads(part.split(b"\r\n--")[0]).get("name")
            except ValueError:
                return None
    return None


class GcsProxy:
    def __init__(
        self,
        target: str,
        flaky_every: int = 0,
        preconditions: bool = False,
        s3: bool = False,
        strip_headers: tuple[str, ...] = (),
    ):
        self.target, self.every, self.preconditions = target, flaky_every, preconditions
        self.s3, self.strip = s3, {name.lower() for name in strip_headers}
        self.count, self.injected, self.refused = 0, [], []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one(self):
                proxy.count += 1
                if proxy.every and proxy.count % proxy.every == 0:
                    status = (
                        (429 if proxy.count % 2 else 503)
                        if not proxy.s3
                        else (503 if proxy.count % 2 else 500)
                    )
                    proxy.injected.append(status)
                    return self.reply(status, proxy.s3_error(status) if proxy.s3 else b"", {})
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                upload = UPLOAD_PATH.match(url.path)
                if proxy.preconditions and upload and "ifGenerationMatch" in query:
                    name = object_name(query, body, self.headers.get("Content-Type", ""))
                    wanted = int(query["ifGenerationMatch"][0])
                    with proxy.lock:  # check and write as one step, as Cloud Storage does
                        current = proxy.generation(upload.group(1), name)
                        if current != wanted:
                            proxy.refused.append(name)
                            return self.reply(412, proxy.condition_not_met(), {})
                        return self.reply(*proxy.forward(self, body))
                return self.reply(*proxy.forward(self, body))

            def reply(self, status, data, headers):
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                if "content-length" in {k.lower() for k in headers} and self.command == "HEAD":
                    self.send_header("Content-Length", headers.get("Content-Length", "0"))
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_one

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, handler, body):
        dropped = {"host", "content-length", "expect", *self.strip}  # urllib sends the body at once
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in dropped}
        if body is not None and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/octet-stream"  # not urllib's form default
        request = urllib.request.Request(
            self.target + handler.path, data=body, headers=headers, method=handler.command
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def generation(self, bucket: str, name: str | None) -> int:
        quoted = urllib.parse.quote(name or "", safe="")
        try:
            with urllib.request.urlopen(f"{self.target}/storage/v1/b/{bucket}/o/{quoted}") as r:
                return int(json.loads(r.read())["generation"])
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return 0
            raise

    @staticmethod
    def s3_error(status: int) -> bytes:
        code = "SlowDown" if status == 503 else "InternalError"
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            "<Message>injected by the test proxy</Message></Error>"
        ).encode()

    @staticmethod
    def condition_not_met() -> bytes:
        error = {
            "code": 412,
            "message": "At least one of the pre-conditions you specified did not hold.",
        }
        error["errors"] = [{"reason": "conditionNotMet", "message": error["message"]}]
        return json.dumps({"error": error}).encode()

    def close(self):
        self.server.shutdown()
