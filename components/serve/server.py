"""`visionpipe serve`: KServe's Python model server over the served file.

The same `VisionModel` is a KServe custom predictor on a cluster (the serving image runs
`python -m components.serve SOURCE`) and a local server here. Endpoints (KServe's own):
Open Inference Protocol v2 REST (/v2/health/live, /v2/health/ready, /v2/models/<name>,
/v2/models/<name>/infer), v1 (/v1/models/<name>:predict), Prometheus /metrics; and ours:
the page at / (drop a picture, see the top-k).

Requests:
- v2: one BYTES input of base64 image files (JPEG, PNG, WebP...), shape [B], or one
  FP32/UINT8 tensor [B, S, S, 3] of 0..255 pixels; a metadata model's fields as the
  request parameter "metadata", a JSON string of [{field: value}, ...] (one object per
  image, or one object for them all: v2 parameters are scalars);
  parameters {"top_k": K} (default --top-k).
- v1: {"instances": [{"b64": "..."} | {"image_bytes": {"b64": "..."}}, ...]}, each
  instance with its "metadata" object for a metadata model.
Bad input is a 400 with one message (`{"error": ...}`), counted by reason in
visionpipe_rejected_requests_total; a body over --max-body-mb is a 413.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from prometheus_client import Counter, Gauge

from components.serve import core
from components.serve.inputs import (
    BadInput,
    Limits,
    decode_images,
    decode_tensor,
    encode_metadata,
    from_base64,
)
from components.serve.model import Served

REJECTED = Counter(
    "visionpipe_rejected_requests", "Requests refused as bad input, by reason", ["reason"]
)
PREDICTED = Counter("visionpipe_predicted_images", "Images answered")
FAR = Counter("visionpipe_out_of_distribution_images", "Answered images beyond the OOD rule")
LOG_EVENTS = Gauge(
    "visionpipe_prediction_log_records",
    "Prediction log records by outcome (logged, written, sampled_out, capped, queue_full, "
    "failed_records)",
    ["outcome"],
)


class VisionModel(kserve.Model):
    def __init__(self, served: Served, limits: Limits, top_k: int = 5, log=None):
        super().__init__(served.name)
        self.served, self.limits, self.top_k, self.log = served, limits, top_k, log
        self.ready = True

    def get_input_types(self) -> list[dict]:
        size = self.served.size
        return [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "pixels", "datatype": "FP32", "shape": [-1, size, size, 3]},
        ]

    def get_output_types(self) -> list[dict]:
        k = min(self.top_k, len(self.served.labels))
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1, k]},
            {"name": "probability", "datatype": "FP32", "shape": [-1, k]},
            {"name": "ood_score", "datatype": "FP32", "shape": [-1]},
            {"name": "out_of_distribution", "datatype": "BOOL", "shape": [-1]},
        ]

    def refuse(self, error: BadInput):
        REJECTED.labels(reason=error.reason).inc()
        return InvalidInput(str(error))

    async def __call__(self, body, headers=None, verb=None):
        try:
            if verb is None:
                return await super().__call__(body, headers)
            return await super().__call__(body, headers, verb)
        except BadInput as error:
            raise self.refuse(error) from None

    def v2_inputs(self, request: kserve.InferRequest):
        if len(request.inputs) != 1:
            raise BadInput(
                f"{len(request.inputs)} inputs: send one, BYTES image files or a pixel tensor",
                "inputs",
            )
        tensor = request.inputs[0]
        params = request.parameters or {}
        if tensor.datatype == "BYTES":
            blobs = [from_base64(item, f"input {tensor.name!r}") for item in tensor.data]
            decoded = decode_images(blobs, self.served.size, self.limits)
        else:
            decoded = decode_tensor(
                tensor.data, tensor.shape, tensor.datatype, self.served.size, self.limits
            )
        metadata = params.get("metadata")
        if isinstance(metadata, str):  # v2 parameters are scalars: the rows as a JSON string
            try:
                metadata = json.loads(metadata)
            except ValueError:
                raise BadInput('parameters "metadata": not JSON', "metadata") from None
        rows = encode_metadata(self.served.encoder, metadata, len(decoded.sizes))
        return decoded, rows, int(params.get("top_k", self.top_k))

    def v1_inputs(self, body: dict):
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list) or not instances:
            raise BadInput('v1: expected {"instances": [{"b64": "<image bytes>"}, ...]}', "v1")
        blobs, metas = [], []
        for n, item in enumerate(instances):
            if not isinstance(item, dict):
                raise BadInput(f'instance {n}: expected {{"b64": "..."}}', "v1")
            data = item.get("b64", (item.get("image_bytes") or {}).get("b64"))
            blobs.append(from_base64(data, f"instance {n}"))
            metas.append(item.get("metadata"))
        decoded = decode_images(blobs, self.served.size, self.limits)
        rows = encode_metadata(
            self.served.encoder, metas if any(metas) else None, len(decoded.sizes)
        )
        return decoded, rows, int(body.get("top_k", self.top_k))

    def work(self, payload):
        if isinstance(payload, kserve.InferRequest):
            decoded, rows, top_k = self.v2_inputs(payload)
        else:
            decoded, rows, top_k = self.v1_inputs(payload)
        results = core.answer(self.served, decoded, rows, max(1, top_k))
        PREDICTED.inc(len(results))
        FAR.inc(sum(bool(r["out_of_distribution"]) for r in results))
        if self.log is not None:
            self.log.offer(decoded, results)
            for outcome, count in self.log.counts.items():
                LOG_EVENTS.labels(outcome=outcome).set(count)
        return results

    async def predict(self, payload, headers=None):
        # the runtimes release the GIL: requests run side by side on KServe's executor
        results = await asyncio.get_running_loop().run_in_executor(None, self.work, payload)
        if isinstance(payload, kserve.InferRequest):
            return self.v2_response(payload, results)
        return {
            "predictions": [core.public(r) for r in results],
            "model_version": self.served.version,
        }

    def v2_response(self, request, results: list[dict[str, Any]]) -> kserve.InferResponse:
        batch, k = len(results), len(results[0]["top"])
        labels = [t["label"] for r in results for t in r["top"]]
        probs = np.array([[t["probability"] for t in r["top"]] for r in results], np.float32)
        outputs = [
            kserve.InferOutput("label", [batch, k], "BYTES", labels),
            kserve.InferOutput("probability", [batch, k], "FP32", probs.ravel().tolist()),
        ]
        if self.served.scorer is not None:
            scores = [r["ood_score"] for r in results]
            far = [r["out_of_distribution"] for r in results]
            outputs.append(kserve.InferOutput("ood_score", [batch], "FP32", scores))
            outputs.append(kserve.InferOutput("out_of_distribution", [batch], "BOOL", far))
        params = {"version": self.served.version, "file": self.served.file.name}
        if self.served.why_no_ood:
            params["ood"] = self.served.why_no_ood
        return kserve.InferResponse(
            response_id=request.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=self.served.version,
            infer_outputs=outputs,
            parameters=params,
        )


def body_limit(app, max_bytes: int):
    """Refuse a body over `max_bytes` with a 413, by its Content-Length or as it streams."""

    async def limited(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await drain(receive, DRAIN_LIMIT)  # read and drop: the client then reads the 413
            return await too_large(send, max_bytes)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise BodyTooLarge
            return message

        try:
            return await app(scope, counted, send)
        except BodyTooLarge:
            return await too_large(send, max_bytes)

    return limited


# a refused body is read and dropped (chunk by chunk, never kept) up to this much, so
# that an ordinary client sees the 413 instead of a broken pipe; past it the connection
# is closed on it
DRAIN_LIMIT = 256 * 1024 * 1024


async def drain(receive, limit: int) -> None:
    seen = 0
    while seen <= limit:
        message = await receive()
        seen += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return


class BodyTooLarge(Exception):
    pass


async def too_large(send, max_bytes: int) -> None:
    REJECTED.labels(reason="body_too_large").inc()
    body = (
        f'{{"error": "request body over {max_bytes} bytes (--max-body-mb); send smaller '
        'images or fewer per request"}'
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def start(model: VisionModel, host: str, port: int) -> None:
    """KServe's ModelServer on host:port (REST only), with the page at / and the limit."""
    from fastapi.responses import HTMLResponse
    from kserve import model_server
    from kserve.protocol.rest import server as rest

    from components.serve.page import page

    html = page(model.served)
    model_server.app.add_api_route("/", lambda: HTMLResponse(html), methods=["GET"])
    model_server.app.add_middleware(BodyMiddleware, max_bytes=model.limits.max_body_bytes)
    original = rest.RESTServer.__init__

    def bound(self, *args, **kwargs):  # kserve 0.21 binds 0.0.0.0; a local serve wants --host
        original(self, *args, **kwargs)
        self.config.host = host

    rest.RESTServer.__init__ = bound
    print(
        f"serving {model.served.name} {model.served.version} ({model.served.file.name}) on "
        f"http://{host}:{port}/",
        file=sys.stderr,
        flush=True,
    )
    server = kserve.ModelServer(
        http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False
    )
    # kserve.trace logs two timing lines per request at INFO: Prometheus has the same
    # numbers (/metrics), and on a 2-core machine the lines cost throughput
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.start([model])


class BodyMiddleware:
    def __init__(self, app, max_bytes: int):
        self.app = body_limit(app, max_bytes)

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)
