"""Ray integration on a local Ray cluster with a few images."""
import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import fastcodec  # noqa: E402
import fastcodec.ray as fray  # noqa: E402
from conftest import synthetic  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_compress_and_decompress_folder(cluster, tmp_path):
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    imgs = {}
    for i, rel in enumerate(["a.png", "b.png", "nested/c.png"]):
        imgs[rel] = synthetic(32 + 8 * i, 48, seed=i)
        Image.fromarray(imgs[rel]).save(src / rel)
    (src / "bad.png").write_bytes(b"not a png")
    stats = fray.compress_folder(str(src), str(tmp_path / "fcc"), quality=60, concurrency=1, batch_size=2)
    assert stats["files"] == 4 and stats["ok"] == 3 and stats["failed"] == 1
    assert stats["errors"][0][0].endswith("bad.png")
    for rel in imgs:
        f = tmp_path / "fcc" / rel.replace(".png", ".fcc")
        assert f.read_bytes() == fastcodec.compress(imgs[rel], quality=60)  # same bytes as in-process
    back = fray.decompress_folder(str(tmp_path / "fcc"), str(tmp_path / "png"))
    assert back["ok"] == 3
    for rel, img in imgs.items():
        assert np.asarray(Image.open(tmp_path / "png" / rel)).shape == img.shape
