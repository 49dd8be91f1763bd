"""`visionpipe collect`: a receiver for KServe's payload logger, writing the same prediction
records as `visionpipe serve --log`.

An InferenceService with `spec.predictor.logger: {url: http://<collect>/, mode: all}`
makes KServe's agent send each request and each response as a CloudEvent (binary mode:
`ce-id` the request id, `ce-type` org.kubeflow.serving.inference.request or .response,
`ce-inferenceservicename`, `ce-namespace`, `ce-component`, `ce-endpoint`, the body as it
was). Events are parsed by the CloudEvents SDK (binary and structured modes), joined by
id, and turned into one record per image: v2 bodies (BYTES image files or a pixel tensor
in; `label`/`probability` outputs as `serve` answers, or a [B, K] probability tensor as
Triton and OVMS answer) and v1 bodies (`instances` of b64 images or pixel arrays in;
`predictions` of top-k objects or probability lists out). With `--model SOURCE` (the
deployed version) the images are also run through its served file for the OOD score and
the embedding projection, and its labels name a probability tensor's classes.
"""

import base64
import binascii
import hashlib
import io
from collections import Counter, OrderedDict
from typing import Any

import numpy as np

from components.serve.inputs import BadInput, Decoded, Limits, decode_images

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
MAX_PENDING = 10_000  # events waiting for their pair; the oldest beyond it are dropped


def blob_of(item) -> bytes | None:
    data = (
        item.get("b64", (item.get("image_bytes") or {}).get("b64"))
        if isinstance(item, dict)
        else item
    )
    if not isinstance(data, str):
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None  # fmt: skip


def request_images(body: dict) -> tuple[list[bytes] | None, np.ndarray | None]:
    """(image files' bytes, or a pixel tensor (B, H, W, C)) of a v2 or v1 request body."""
    if isinstance(body.get("inputs"), list) and body["inputs"]:
        tensor = body["inputs"][0]
        if tensor.get("datatype") == "BYTES":
            return [blob_of(item) or b"" for item in tensor.get("data", [])], None
        return None, np.asarray(tensor.get("data"), np.float32).reshape(tensor["shape"])
    instances = body.get("instances") or []
    if instances and blob_of(instances[0]) is not None:
        return [blob_of(item) or b"" for item in instances], None
    return None, np.asarray(instances, np.float32)


def identify(blobs, pixels) -> tuple[list[str], list[tuple[int, int]]]:
    """sha256 and (width, height) per image, from the file's header (no decoding)."""
    from PIL import Image

    if blobs is None:
        as_bytes = [np.asarray(p).astype(np.uint8).tobytes() for p in pixels]
        return [hashlib.sha256(b).hexdigest() for b in as_bytes], [
            (int(pixels.shape[2]), int(pixels.shape[1]))
        ] * len(pixels)
    sizes = []
    for blob in blobs:
        try:
            sizes.append(Image.open(io.BytesIO(blob)).size)
        except Exception:  # not an image: the served model refused it too
            sizes.append((0, 0))
    return [hashlib.sha256(b).hexdigest() for b in blobs], sizes


def top_k(probs, labels: list[str] | None, k: int) -> list[dict]:
    row = np.asarray(probs, np.float32)
    order = np.argsort(-row)[:k]
    name = (lambda j: labels[j]) if labels else str
    return [{"label": name(int(j)), "probability": round(float(row[j]), 6)} for j in order]


def response_tops(body: dict, labels, k: int) -> list[list[dict]]:
    """Per image, the top-k the deployed model answered."""
    if isinstance(body.get("outputs"), list):
        outputs = {o["name"]: o for o in body["outputs"]}
        if "label" in outputs and "probability" in outputs:  # visionpipe serve
            batch, width = outputs["label"]["shape"]
            names, probs = outputs["label"]["data"], outputs["probability"]["data"]
            return [
                [{"label": names[i * width + j], "probability": round(float(probs[i * width + j]), 6)}
                 for j in range(width)]
                for i in range(batch)
            ]  # fmt: skip
        first = body["outputs"][0]  # Triton / OVMS: the probabilities tensor
        table = np.asarray(first["data"], np.float32).reshape(first["shape"])
        return [top_k(row, labels, k) for row in table]
    predictions = body.get("predictions") or []
    if predictions and isinstance(predictions[0], dict) and "top" in predictions[0]:
        return [p["top"] for p in predictions]
    return [top_k(row, labels, k) for row in predictions]  # TF Serving: probability lists


class Collector:
    """Joins request and response events by id and turns each pair into records."""

    def __init__(self, log, served=None, top: int = 5):
        self.log, self.served, self.top = log, served, top
        self.pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.counts: Counter[str] = Counter()

    def receive(self, event) -> int:
        """One CloudEvent; the number of records made (0 while its pair is awaited)."""
        kind = {REQUEST: "request", RESPONSE: "response"}.get(event["type"])
        if kind is None:
            self.counts["ignored"] += 1
            return 0
        entry = self.pending.setdefault(event["id"], {})
        entry[kind] = event
        if "request" not in entry or "response" not in entry:
            while len(self.pending) > MAX_PENDING:
                self.pending.popitem(last=False)
                self.counts["unmatched"] += 1
            return 0
        del self.pending[event["id"]]
        return self.join(entry["request"], entry["response"])

    def join(self, request, response) -> int:
        try:
            blobs, pixels = request_images(request.data or {})
            labels = self.served.labels if self.served is not None else None
            tops = response_tops(response.data or {}, labels, self.top)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            self.counts["unreadable"] += 1
            print(f"collect: event {request['id']}: unreadable body ({error})", flush=True)
            return 0
        hashes, sizes = identify(blobs, pixels)
        extra = self.model_view(blobs, pixels, len(tops))
        model = request.get("inferenceservicename") or (request.data or {}).get("model_name", "")
        version = str((response.data or {}).get("model_version") or "")
        results = [
            {"top": top, **extra[i]} for i, top in enumerate(tops)
        ]  # fmt: skip
        decoded = Decoded(np.zeros((0,)), hashes, sizes, blobs)
        self.log.name, self.log.version = model or self.log.name, version or self.log.version
        self.log.offer(decoded, results)
        self.counts["records"] += len(results)
        return len(results)

    def model_view(self, blobs, pixels, count: int) -> list[dict]:
        """OOD score, far flag and projection per image from the served file (--model)."""
        empty = {"ood_score": None, "out_of_distribution": None, "projection": None}
        if self.served is None:
            return [dict(empty) for _ in range(count)]
        from components.serve import core

        try:
            if blobs is not None:
                decoded = decode_images(blobs, self.served.size, Limits())
            else:
                decoded = Decoded(pixels, [None] * len(pixels), [])
            answers = core.answer(self.served, decoded, None, self.top)
        except (BadInput, ValueError) as error:
            self.counts["not_scored"] += count
            print(f"collect: images not scored ({error})", flush=True)
            return [dict(empty) for _ in range(count)]
        return [
            {k: a[k] for k in ("ood_score", "out_of_distribution", "projection")} for a in answers
        ]


def app(collector: Collector):
    """A FastAPI app: POST / takes one CloudEvent (KServe's logger posts to the URL as is);
    GET /healthz is the pod's probe, GET /stats the counters."""
    from cloudevents.exceptions import GenericException
    from cloudevents.http import from_http
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    # (no `from __future__ import annotations` in this module: FastAPI reads the handler's
    # annotations, and Request is imported here, not at module level)
    api = FastAPI(title="visionpipe collect")

    @api.post("/")
    async def receive(request: Request):
        body = await request.body()
        try:
            event = from_http(dict(request.headers), body)
        except GenericException as error:
            collector.counts["not_cloudevents"] += 1
            return JSONResponse({"error": f"not a CloudEvent: {error}"}, status_code=400)
        made = collector.receive(event)
        return JSONResponse({"records": made})

    @api.get("/healthz")
    async def healthz():
        """Liveness and readiness (k8s/components/collect): 503 once the log writer is gone."""
        if not collector.log.thread.is_alive():
            return JSONResponse(
                {"live": False, "error": "the prediction-log writer thread has stopped"},
                status_code=503,
            )
        return {"live": True}

    @api.get("/stats")
    async def stats():
        return {**collector.counts, **{f"log_{k}": v for k, v in collector.log.counts.items()}}

    return api
