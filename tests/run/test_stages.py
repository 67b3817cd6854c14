"""The stage adapters called directly, without Ray: they are plain functions and classes."""

import numpy as np
import pyarrow as pa

from captioner import schema
from captioner.models import loading as model
from captioner.run import stages
from captioner.config import DecodeConfig, GenerationConfig, InputConfig, ModelConfig, RunConfig, StorageConfig
from captioner.fingerprint import fingerprints
from captioner.media.image import Resize
from conftest import BAD, GOOD


def _batch(paths, langs="en"):
    return {
        schema.URI: np.array([str(p) for p in paths], dtype=object),
        schema.SIZE: np.array([p.stat().st_size if p.exists() else np.nan for p in paths]),
        schema.ETAG: np.array(["e"] * len(paths), dtype=object),
        schema.LANGS: np.array([langs] * len(paths), dtype=object),
        schema.ATTEMPT: np.zeros(len(paths), dtype=np.int32),
    }


def test_read_and_decode_turns_failures_into_values(image_folder):
    paths = sorted(p for p in image_folder.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    spec = model.ImageSpec(resize=Resize(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    clip = model.ImageSpec(resize=Resize(16, 16, crop=True), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    batch = _batch(paths + [image_folder / "gone.jpg"])
    out = stages.read_and_decode(batch, {schema.PIXELS: spec, schema.CLIP_PIXELS: clip}, StorageConfig(), DecodeConfig())
    assert out[schema.CLIP_PIXELS].shape == (len(paths) + 1, 16, 16, 3)
    assert out[schema.PIXELS].shape == (len(paths) + 1, 32, 32, 3)
    errors = {uri.rsplit("/", 1)[1]: kind for uri, kind in zip(out[schema.URI], out[schema.ERROR_TYPE]) if kind}
    assert errors == {**BAD, "gone.jpg": "not_found"}
    ok = [kind is None for kind in out[schema.ERROR_TYPE]]
    assert sum(ok) == GOOD and (out[schema.WIDTH][ok] > 0).all()


def test_caption_actor_writes_one_row_per_image(image_folder, tiny_model):
    paths = sorted(image_folder.glob("*.jpg"))
    info = model.describe(ModelConfig(name=str(tiny_model)))
    decoded = stages.read_and_decode(_batch(paths), {schema.PIXELS: info.image}, StorageConfig(), DecodeConfig())
    config = RunConfig(input=InputConfig(str(image_folder)), output="unused", model=ModelConfig(name=str(tiny_model)),
                       generation=GenerationConfig(max_new_tokens=4))
    actor = stages.CaptionActor(config, run_id="run-1", num_threads=1)
    out = actor(decoded)
    assert isinstance(out, pa.Table) and out.schema == schema.IMAGE_RESULT
    assert out[schema.URI].to_pylist() == [str(p) for p in paths]
    for row in out.to_pylist():
        assert row[schema.RUN_ID] == "run-1"
        if row[schema.ERROR_TYPE]:
            assert not row[schema.RESULTS] and row[schema.ATTEMPT] == 1
        else:
            assert [r[schema.LANG] for r in row[schema.RESULTS]] == ["en"] and row[schema.MODEL] == str(tiny_model)
            assert row[schema.RESULTS][0][schema.FINGERPRINT] == fingerprints(config)["en"]


def test_an_object_changed_since_listing_is_not_captioned_under_its_old_identity(image_folder):
    path = image_folder / "img0.jpg"
    batch = _batch([path])
    batch[schema.SIZE] = batch[schema.SIZE] + 1  # listed at another size
    spec = model.ImageSpec(resize=Resize(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    out = stages.read_and_decode(batch, {schema.PIXELS: spec}, StorageConfig(), DecodeConfig())
    assert out[schema.ERROR_TYPE][0] == "changed"


def test_store_hiccups_are_retried_within_the_run(monkeypatch, image_folder):
    """An HTTP store on loopback that answers 503 twice, then the image."""
    import http.server
    import threading

    body = (image_folder / "img0.jpg").read_bytes()
    seen = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            if len(seen) <= 2:
                self.send_error(503, "Slow Down")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(stages, "READ_BACKOFF_S", 0.01)
    try:
        assert stages._read(f"http://127.0.0.1:{server.server_port}/img0.jpg", StorageConfig(), len(body)) == body
    finally:
        server.shutdown()
    assert len(seen) == 3


def test_objects_over_the_size_cap_are_never_read(image_folder, tmp_path):
    """A sparse 10 GiB file is refused from its listed size; one listed too small is cut off at the cap."""
    import time

    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(10 * 2**30)
    spec = model.ImageSpec(resize=Resize(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    lying = _batch([huge, image_folder / "img0.jpg"])
    lying[schema.SIZE] = np.array([1000.0, lying[schema.SIZE][1]])  # a manifest that got the size wrong
    started = time.monotonic()
    for batch in (_batch([huge, image_folder / "img0.jpg"]), lying):
        out = stages.read_and_decode(batch, {schema.PIXELS: spec}, StorageConfig(), DecodeConfig(max_file_mb=1))
        assert list(out[schema.ERROR_TYPE]) == ["too_large", None]
        assert "MiB limit (--max-image-mb)" in out[schema.ERROR][0]
    assert time.monotonic() - started < 5


def test_decoding_runs_under_the_time_budget(image_folder, tmp_path):
    import io

    from PIL import Image

    slow = tmp_path / "slow.png"
    buf = io.BytesIO()
    Image.new("L", (8000, 8000), 90).save(buf, format="PNG")  # ~0.5 s of genuine decoding
    slow.write_bytes(buf.getvalue())
    spec = model.ImageSpec(resize=Resize(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    out = stages.read_and_decode(_batch([slow, image_folder / "img0.jpg"]), {schema.PIXELS: spec}, StorageConfig(),
                                 DecodeConfig(timeout_s=0.05))
    assert list(out[schema.ERROR_TYPE]) == ["timeout", None]
