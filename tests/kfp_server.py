"""A local stand-in for the KFP v2beta1 REST API: answers what kfp.Client calls, records it.

Not a mock of our code: the real kfp.Client (and its generated kfp_server_api
client) talks HTTP to this server, which keeps pipelines, versions,
experiments, runs and recurring runs in memory, so the requests our commands
make can be asserted one by one. A Kubernetes cluster with KFP cannot run here.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "/apis/v2beta1"
NOW = "2026-11-26T00:00:00Z"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: dict | None = None
    files: dict[str, bytes] = field(default_factory=dict)


class KfpServer:
    def __init__(self, final_run_state: str = "SUCCEEDED"):
        self.requests: list[Request] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.final_run_state = final_run_state
        self._ids = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server._handle(self, "GET")

            def do_POST(self):
                server._handle(self, "POST")

            def do_DELETE(self):
                server._handle(self, "DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def calls(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # -- plumbing
    def _new_id(self, kind: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{kind}-{self._ids}"

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urllib.parse.urlparse(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        request = Request(
            method,
            parsed.path,
            urllib.parse.parse_qs(parsed.query),
            {k.lower(): v for k, v in handler.headers.items()},
        )
        content_type = handler.headers.get("Content-Type", "")
        if body and "multipart/form-data" in content_type:
            message = BytesParser(policy=default_policy).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body
            )
            for part in message.iter_parts():
                request.files[part.get_param("name", header="content-disposition")] = (
                    part.get_payload(decode=True)
                )
        elif body:
            request.json = json.loads(body)
        self.requests.append(request)
        status, answer = self._route(request)
        payload = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _route(self, r: Request) -> tuple[int, dict]:
        p, q = r.path, r.query
        if p == f"{API}/healthz":
            return 200, {"multi_user": False}
        if p == f"{API}/pipelines/upload" and r.method == "POST":
            name = q.get("name", q.get("display_name", ["pipeline"]))[0]
            pid = self._new_id("pipeline")
            self.pipelines[pid] = {
                "pipeline_id": pid,
                "display_name": name,
                "name": name,
                "created_at": NOW,
            }
            self.versions[pid] = [self._version(pid, name, r.files)]
            return 200, self.pipelines[pid]
        if p == f"{API}/pipelines/upload_version" and r.method == "POST":
            pid = q["pipelineid"][0]
            version = self._version(pid, q.get("name", ["version"])[0], r.files)
            self.versions[pid].append(version)
            return 200, version
        if p == f"{API}/pipelines" and r.method == "GET":
            return 200, _listed("pipelines", self.pipelines, q)
        m = re.fullmatch(rf"{API}/pipelines/([^/]+)/versions", p)
        if m and r.method == "GET":
            versions = sorted(self.versions.get(m[1], []), key=lambda v: v["seq"], reverse=True)
            return 200, {"pipeline_versions": versions, "total_size": len(versions)}
        if p == f"{API}/experiments" and r.method == "GET":
            return 200, _listed("experiments", self.experiments, q)
        if p == f"{API}/experiments" and r.method == "POST":
            eid = self._new_id("experiment")
            self.experiments[eid] = {**r.json, "experiment_id": eid, "created_at": NOW}
            return 200, self.experiments[eid]
        if p == f"{API}/runs" and r.method == "POST":
            rid = self._new_id("run")
            self.runs[rid] = {**r.json, "run_id": rid, "state": "PENDING", "created_at": NOW}
            return 200, self.runs[rid]
        m = re.fullmatch(rf"{API}/runs/([^/:]+)", p)
        if m and r.method == "GET":
            run = self.runs[m[1]]
            run["state"] = self.final_run_state  # the second look finds it finished
            return 200, run
        if p == f"{API}/recurringruns" and r.method == "POST":
            rid = self._new_id("recurring")
            self.recurring[rid] = {**r.json, "recurring_run_id": rid, "created_at": NOW}
            return 200, self.recurring[rid]
        return 404, {"error": f"not implemented here: {r.method} {p}", "code": 5}

    def _version(self, pid: str, name: str, files: dict[str, bytes]) -> dict:
        return {
            "pipeline_id": pid,
            "pipeline_version_id": self._new_id("version"),
            "display_name": name,
            "name": name,
            "created_at": NOW,
            "seq": self._ids,
            "package": (files.get("uploadfile") or b"").decode(),
        }


def _listed(kind: str, items: dict[str, dict], query: dict[str, list[str]]) -> dict:
    """A list response, narrowed by the display-name filter the client sends."""
    found = list(items.values())
    wanted = _filter_value(query, "display_name") or _filter_value(query, "name")
    if wanted is not None:
        found = [x for x in found if x["display_name"] == wanted]
    return {kind: found, "total_size": len(found)}


def _filter_value(query: dict[str, list[str]], key: str) -> str | None:
    """The string a KFP list filter (JSON in ?filter=) asks `key` to equal."""
    raw = query.get("filter", [None])[0]
    if not raw:
        return None
    for predicate in json.loads(raw).get("predicates", []):
        if predicate.get("key") == key:
            return predicate.get("string_value") or predicate.get("stringValue")
    return None
