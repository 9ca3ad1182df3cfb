"""The HTTP service, exercised with real HTTP requests on loopback."""
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import fastcodec  # noqa: E402
from conftest import icc_profile, synthetic  # noqa: E402


class Server:
    def __init__(self, **kw):
        import uvicorn
        from fastcodec.server import create_app
        self.app = create_app(**kw)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server():
    s = Server(concurrency=2, queue=4, max_body=2_000_000, max_pixels=1_000_000)
    yield s
    s.stop()


def png_bytes(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def test_roundtrip_over_http(server):
    img = synthetic(48, 64)
    r = httpx.post(f"{server.url}/v1/compress?quality=70", content=png_bytes(img), timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-fastcodec"
    assert r.content[:4] == b"\x89FCC" and r.headers["x-fastcodec-size"] == "64x48"
    assert fastcodec.info(r.content).quality == 70
    d = httpx.post(f"{server.url}/v1/decompress", content=r.content, timeout=60)
    assert d.status_code == 200 and d.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(d.content))), fastcodec.decompress(r.content))
    w = httpx.post(f"{server.url}/v1/decompress", content=r.content, headers={"Accept": "image/webp"}, timeout=60)
    assert w.headers["content-type"] == "image/webp"
    j = httpx.post(f"{server.url}/v1/decompress?format=jpeg", content=r.content, timeout=60)
    assert j.headers["content-type"] == "image/jpeg"
    t = httpx.post(f"{server.url}/v1/compress?target_bpp=1.5", content=png_bytes(img), timeout=60)
    assert t.status_code == 200 and 8 * len(t.content) / (48 * 64) <= 1.5
    t = httpx.post(f"{server.url}/v1/compress?target_size=400", content=png_bytes(img), timeout=60)
    assert t.status_code == 200 and len(t.content) <= 400
    t = httpx.post(f"{server.url}/v1/compress?target_size=400&target_bpp=1", content=png_bytes(img), timeout=60)
    assert t.status_code == 400 and "not both" in t.json()["error"]


def test_lossless_over_http(server):
    img = synthetic(30, 44, seed=6)
    r = httpx.post(f"{server.url}/v1/compress?lossless=true", content=png_bytes(img), timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["x-fastcodec-max-error"] == "0" and "x-fastcodec-quality" not in r.headers
    d = httpx.post(f"{server.url}/v1/decompress", content=r.content, timeout=60)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(d.content))), img)
    r = httpx.post(f"{server.url}/v1/compress?max_error=3", content=png_bytes(img), timeout=60)
    assert r.status_code == 200 and fastcodec.info(r.content).max_error == 3
    r = httpx.post(f"{server.url}/v1/compress?max_error=3&quality=50", content=png_bytes(img), timeout=60)
    assert r.status_code == 400 and "quality" in r.json()["error"]
    r = httpx.post(f"{server.url}/v1/compress?max_error=40", content=png_bytes(img), timeout=60)
    assert r.status_code == 422
    # 16-bit gray: kept as 16 bits, returned as a 16-bit PNG; JPEG cannot hold it (400)
    deep = ((np.arange(30 * 44).reshape(30, 44) * 997) % 65536).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(deep).save(buf, "PNG")
    r = httpx.post(f"{server.url}/v1/compress?lossless=true", content=buf.getvalue(), timeout=60)
    assert r.status_code == 200 and fastcodec.info(r.content).bits == 16
    d = httpx.post(f"{server.url}/v1/decompress", content=r.content, timeout=60)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(d.content))), deep)
    d = httpx.post(f"{server.url}/v1/decompress?format=jpeg", content=r.content, timeout=60)
    assert d.status_code == 400 and "8 bits" in d.json()["error"]


def test_region_over_http(server):
    img = synthetic(48, 64, seed=2)
    data = fastcodec.compress(img, quality=60)
    r = httpx.post(f"{server.url}/v1/decompress?box=8,4,40,30", content=data, timeout=60)
    assert r.status_code == 200, r.text
    part = np.asarray(Image.open(io.BytesIO(r.content)))
    assert np.array_equal(part, fastcodec.decompress(data)[4:30, 8:40])
    r = httpx.post(f"{server.url}/v1/decompress?box=0,0,65,48", content=data, timeout=30)
    assert r.status_code == 400 and "right <= 64" in r.json()["error"]
    r = httpx.post(f"{server.url}/v1/decompress?box=0,0,-5,48", content=data, timeout=30)
    assert r.status_code == 422


def test_thumbnail_over_http(server):
    img = synthetic(48, 70, seed=4)
    data = fastcodec.compress(img, quality=60)
    r = httpx.post(f"{server.url}/v1/decompress?reduce=4", content=data, timeout=60)
    assert r.status_code == 200, r.text
    small = np.asarray(Image.open(io.BytesIO(r.content)))
    assert small.shape == (12, 18, 3) and np.array_equal(small, fastcodec.decompress(data, reduce=4))
    r = httpx.post(f"{server.url}/v1/decompress?reduce=3", content=data, timeout=30)
    assert r.status_code == 400 and "reduce must be one of 1, 2, 4, 8" in r.json()["error"]
    r = httpx.post(f"{server.url}/v1/decompress?reduce=2&box=3,1,20,9", content=data, timeout=30)
    assert r.status_code == 200, r.text  # a region of the reduced image: a tile of a zoomable one
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), fastcodec.decompress(data, reduce=2)[1:9, 3:20])


def test_errors(server):
    r = httpx.post(f"{server.url}/v1/compress", content=b"not an image", timeout=30)
    assert r.status_code == 400 and "cannot decode" in r.json()["error"]
    r = httpx.post(f"{server.url}/v1/decompress", content=b"\x89FCC\x01junk", timeout=30)
    assert r.status_code == 400 and "truncated" in r.json()["error"]
    r = httpx.post(f"{server.url}/v1/compress", timeout=30)
    assert r.status_code == 400
    r = httpx.post(f"{server.url}/v1/compress?quality=0", content=b"x", timeout=30)
    assert r.status_code == 422
    r = httpx.post(f"{server.url}/v1/compress", content=b"\0" * 2_100_000, timeout=30)
    assert r.status_code == 413
    big = png_bytes(np.zeros((1100, 1000, 3), np.uint8))  # 1.1 MP > max_pixels
    r = httpx.post(f"{server.url}/v1/compress", content=big, timeout=30)
    assert r.status_code == 413 and "max_pixels" in r.json()["error"]


def test_health_metrics_openapi(server):
    h = httpx.get(f"{server.url}/healthz").json()
    assert h["status"] == "ok" and len(h["model"]) == 16
    m = httpx.get(f"{server.url}/metrics").text
    assert "fastcodec_requests_total" in m and 'endpoint="compress"' in m
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/compress" in spec["paths"] and "/v1/decompress" in spec["paths"]


def test_overload_answers_every_request():
    """4x more concurrent requests than capacity: each gets 200 or 503 (with Retry-After)."""
    codec = fastcodec.Codec(threads=1)
    real = codec.compress

    def slow(*a, **k):
        time.sleep(0.3)
        return real(*a, **k)

    codec.compress = slow
    s = Server(codec=codec, concurrency=1, queue=1)
    try:
        body = png_bytes(synthetic(16, 16))
        with ThreadPoolExecutor(8) as ex:
            rs = list(ex.map(lambda _: httpx.post(f"{s.url}/v1/compress", content=body, timeout=60), range(8)))
        codes = sorted(r.status_code for r in rs)
        assert set(codes) <= {200, 503} and codes.count(200) >= 2 and 503 in codes
        assert all(r.headers.get("retry-after") == "1" for r in rs if r.status_code == 503)
        assert httpx.get(f"{s.url}/healthz").status_code == 200
    finally:
        s.stop()


def test_alpha_and_metadata_over_http(server):
    rgba = np.dstack([synthetic(32, 40, seed=3), np.where(np.arange(40) < 20, 255, 0).astype(np.uint8)[None].repeat(32, 0)])
    im = Image.fromarray(rgba, "RGBA")
    exif = im.getexif()
    exif[0x010F] = "Cam"
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif.tobytes(), icc_profile=icc_profile())
    kept = httpx.post(f"{server.url}/v1/compress?quality=70", content=buf.getvalue(), timeout=60)
    stripped = httpx.post(f"{server.url}/v1/compress?quality=70&strip_metadata=true", content=buf.getvalue(),
                          timeout=60)
    assert kept.status_code == stripped.status_code == 200
    assert fastcodec.info(kept.content).metadata == ("exif", "icc") and fastcodec.info(stripped.content).metadata == ()
    r = httpx.post(f"{server.url}/v1/decompress?format=png", content=kept.content, timeout=60)
    assert r.status_code == 200
    out = Image.open(io.BytesIO(r.content))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])
    assert out.getexif()[0x010F] == "Cam" and out.info["icc_profile"] == icc_profile()
    r = httpx.post(f"{server.url}/v1/decompress?format=jpeg", content=kept.content, timeout=60)
    assert r.status_code == 400 and "alpha" in r.json()["error"]


def test_effort_is_capped_by_the_server(server):
    img = synthetic(48, 64, seed=4)
    r = httpx.post(f"{server.url}/v1/compress?quality=60&effort=2", content=png_bytes(img), timeout=60)
    assert r.status_code == 400 and "max_effort" in r.json()["error"]
    s = Server(concurrency=1, queue=1, max_effort=2)
    try:
        r = httpx.post(f"{s.url}/v1/compress?quality=60&effort=2", content=png_bytes(img), timeout=120)
        assert r.status_code == 200, r.text
        assert r.content == fastcodec.compress(img, quality=60, effort=2)
        r = httpx.post(f"{s.url}/v1/compress?quality=60&effort=3", content=png_bytes(img), timeout=60)
        assert r.status_code == 400 and "from 1 to 2" in r.json()["error"]
    finally:
        s.stop()
    with pytest.raises(fastcodec.ArgumentError, match="max_effort"):
        from fastcodec.server import create_app
        create_app(max_effort=5)
