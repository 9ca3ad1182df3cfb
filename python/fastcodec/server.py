"""HTTP service: ``fastcodec serve`` (FastAPI on uvicorn).

Endpoints
    POST /v1/compress     body: an image file (any format Pillow reads); query: quality, target_bpp, target_size or
                          target_psnr,
                          strip_metadata, effort (up to the server's max_effort, 1 unless configured);
                          or lossless=true / max_error=K (near-lossless)
                          -> application/x-fastcodec (.fcc bytes)
    POST /v1/decompress   body: .fcc bytes; query: format=png|webp|jpeg (else from Accept) -> image
    GET  /healthz         liveness
    GET  /metrics         Prometheus metrics
    GET  /docs            OpenAPI documentation (/openapi.json)

One Codec serves every request. The CPU work runs in worker threads, at most ``concurrency`` at a
time (the event loop never blocks); at most ``queue`` more requests wait, and beyond that the
server answers 503 with Retry-After at once, so overload costs neither memory nor latency for the
admitted requests. Bodies larger than ``max_body`` get 413, images with more pixels than
``max_pixels`` get 413, malformed input gets 400 with a JSON message.
"""
from __future__ import annotations

import os
import time

import anyio
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from . import Codec, __version__
from .errors import ArgumentError, FastcodecError, LimitError

FCC_MIME = "application/x-fastcodec"
OUTPUT_MIME = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
PIL_FORMAT = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}


class Overloaded(Exception):
    pass


class _Admission:
    """Bounded admission: `concurrency` run, `queue` wait, the rest are refused immediately."""

    def __init__(self, concurrency: int, queue: int):
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.capacity = concurrency + queue
        self.admitted = 0

    async def run(self, fn, *args):
        if self.admitted >= self.capacity:
            raise Overloaded()
        self.admitted += 1  # single event-loop thread: no lock needed
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        finally:
            self.admitted -= 1


def create_app(codec: Codec | None = None, concurrency: int | None = None, queue: int | None = None,
               max_body: int = 50 * 2 ** 20, max_pixels: int = 50_000_000, max_effort: int = 1) -> FastAPI:
    concurrency = concurrency or max(1, os.cpu_count() or 1)
    queue = 2 * concurrency if queue is None else queue
    codec = codec or Codec(threads=1, max_pixels=max_pixels)
    if isinstance(max_effort, bool) or not isinstance(max_effort, int) or not 1 <= max_effort <= 3:
        raise ArgumentError(f"max_effort must be a whole number from 1 to 3, got {max_effort!r}")
    if max_effort > 1:
        codec.model.check_refine()  # the model must have the refinement graph
    admission = _Admission(concurrency, queue)
    reg = CollectorRegistry()
    requests = Counter("fastcodec_requests_total", "Requests by endpoint and status", ["endpoint", "status"],
                       registry=reg)
    latency = Histogram("fastcodec_request_seconds", "Request latency", ["endpoint"], registry=reg,
                        buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
    bytes_in = Counter("fastcodec_bytes_in_total", "Request body bytes", ["endpoint"], registry=reg)
    bytes_out = Counter("fastcodec_bytes_out_total", "Response body bytes", ["endpoint"], registry=reg)
    inflight = Gauge("fastcodec_inflight", "Requests admitted (running or waiting)", registry=reg)
    inflight.set_function(lambda: admission.admitted)

    app = FastAPI(title="fastcodec", version=__version__,
                  description="Learned image compression: images to .fcc and back.")
    app.state.codec = codec
    app.state.admission = admission

    async def body_of(request: Request, endpoint: str) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            raise HTTPException(413, f"body of {length} bytes exceeds the limit of {max_body} bytes")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body:
                raise HTTPException(413, f"body exceeds the limit of {max_body} bytes")
            chunks.append(chunk)
        if total == 0:
            raise HTTPException(400, "empty request body: send the file as the body")
        bytes_in.labels(endpoint).inc(total)
        return b"".join(chunks)

    async def guarded(endpoint: str, fn, *args):
        t0 = time.perf_counter()
        status = 200
        try:
            return await admission.run(fn, *args)
        except Overloaded:
            status = 503
            raise HTTPException(503, "server is at capacity; retry shortly", headers={"Retry-After": "1"})
        except LimitError as e:
            status = 413
            raise HTTPException(413, str(e))
        except FastcodecError as e:
            status = 400
            raise HTTPException(400, str(e))
        finally:
            requests.labels(endpoint, str(status)).inc()
            latency.labels(endpoint).observe(time.perf_counter() - t0)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.post("/v1/compress", response_class=Response,
              responses={200: {"content": {FCC_MIME: {}}, "description": "the .fcc file"}})
    async def compress(request: Request, quality: float | None = Query(None, ge=1, le=100, description="1..100 (default 75)"),
                       target_bpp: float | None = Query(None, gt=0, lt=64),
                       target_size: int | None = Query(None, ge=1, le=1 << 40),
                       target_psnr: float | None = Query(None, gt=0, le=100, description="smallest file with at "
                                                         "least this PSNR in dB (near-lossless or lossless above "
                                                         "what the learned codec reaches)"),
                       strip_metadata: bool = Query(False, description="drop the image's EXIF, XMP and ICC profile (the profile applied first)"),
                       effort: int = Query(1, ge=1, le=3, description="1, or 2-3 to refine the latents (slower "
                                           "encoding, smaller files) where the server allows it (max_effort)"),
                       lossless: bool = Query(False, description="keep every pixel exactly (format v3, no quality)"),
                       max_error: int | None = Query(None, ge=0, le=32, description="near-lossless: every value "
                                                     "within this many levels of the original")):
        """Compress the image in the request body (PNG, JPEG, WebP, ... any format Pillow reads).
        Transparency (alpha), EXIF, XMP and the ICC profile are kept unless ``strip_metadata``."""
        if effort > max_effort:
            requests.labels("compress", "400").inc()
            raise HTTPException(400, f"effort must be from 1 to {max_effort} on this server (its max_effort), "
                                     f"got {effort}")
        body = await body_of(request, "compress")
        data = await guarded("compress", lambda: codec.compress(body, quality=quality, target_bpp=target_bpp,
                                                                target_size=target_size, target_psnr=target_psnr,
                                                                keep_metadata=not strip_metadata, effort=effort,
                                                                lossless=lossless, max_error=max_error))
        bytes_out.labels("compress").inc(len(data))
        inf = codec.info(data)
        quality = {"X-Fastcodec-Quality": f"{inf.quality:g}"} if inf.max_error is None \
            else {"X-Fastcodec-Max-Error": str(inf.max_error)}
        return Response(data, media_type=FCC_MIME, headers={
            "X-Fastcodec-Bpp": f"{inf.bpp:.5f}", **quality, "X-Fastcodec-Size": f"{inf.width}x{inf.height}"})

    @app.post("/v1/decompress", response_class=Response,
              responses={200: {"content": {m: {} for m in OUTPUT_MIME.values()}, "description": "the image"}})
    async def decompress(request: Request, format: str | None = Query(None, pattern="^(png|webp|jpeg|jpg)$"),
                         box: str | None = Query(None, pattern=r"^\d{1,9},\d{1,9},\d{1,9},\d{1,9}$",
                                                 description="only this region: left,upper,right,lower in "
                                                             "pixels (right and lower excluded)"),
                         reduce: int = Query(1, ge=1, le=8, description="decode the image reduced by 2, 4 or 8 "
                                             "(thumbnails; much faster than the whole image)")):
        """Decode the .fcc file in the request body to PNG (default), WebP or JPEG (by `format` or Accept);
        with `box`, only that region (the same pixels as cropping the whole image; 400 if it is
        not inside the image); with `reduce`, the image reduced by that factor (2, 4 or 8), and with
        both, that region of the reduced image."""
        region = tuple(int(v) for v in box.split(",")) if box else None
        fmt = (format or "").replace("jpg", "jpeg")
        if not fmt:
            accept = request.headers.get("accept", "")
            fmt = next((k for k, m in OUTPUT_MIME.items() if m in accept), "png")
        body = await body_of(request, "decompress")

        def work():
            # alpha, EXIF, XMP and the ICC profile travel where the format holds them; JPEG of an image with
            # alpha, or of a 16-bit one, is refused (400) rather than silently flattened
            return codec._decompress_encoded(body, PIL_FORMAT[fmt], box=region, reduce=reduce,
                                             **({"quality": 95} if fmt in ("jpeg", "webp") else {}))[0]

        data = await guarded("decompress", work)
        bytes_out.labels("decompress").inc(len(data))
        return Response(data, media_type=OUTPUT_MIME[fmt])

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": codec.model.id, "version": __version__}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(generate_latest(reg).decode(), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(host="127.0.0.1", port=8000, concurrency=None, queue=None, max_body=50 * 2 ** 20,
          max_pixels=50_000_000, log_level="info", max_effort=1):
    import uvicorn

    app = create_app(concurrency=concurrency, queue=queue, max_body=max_body, max_pixels=max_pixels,
                     max_effort=max_effort)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
