"""The read + decode stage called directly, without Ray: a plain function."""

import numpy as np

from captioner import schema
from captioner.config import DecodeConfig, StorageConfig, VideoConfig
from captioner.media.image import Resize
from captioner.models import preprocess as model
from captioner.run import reading
from conftest import BAD, GOOD
from results import todo_rows


def _decode(batch, images, **limits):
    return reading.read_and_decode(batch, images, StorageConfig(), DecodeConfig(**limits), VideoConfig(), "en")


def test_read_and_decode_turns_failures_into_values(image_folder):
    paths = sorted(p for p in image_folder.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    spec = model.ImageSpec(resize=Resize(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    clip = model.ImageSpec(resize=Resize(16, 16, crop=True), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    batch = todo_rows(paths + [image_folder / "gone.jpg"])
    out = _decode(batch, {schema.PIXELS: spec, schema.CLIP_PIXELS: clip})
    assert out[schema.CLIP_PIXELS].shape == (len(paths) + 1, 16, 16, 3)
    assert out[schema.PIXELS].shape == (len(paths) + 1, 32, 32, 3)
    errors = {uri.rsplit("/", 1)[1]: kind for uri, kind in zip(out[schema.URI], out[schema.ERROR_TYPE]) if kind}
    assert errors == {**BAD, "gone.jpg": "not_found"}
    ok = [kind is None for kind in out[schema.ERROR_TYPE]]
    assert sum(ok) == GOOD and (out[schema.WIDTH][ok] > 0).all()


def test_an_object_changed_since_listing_is_not_captioned_under_its_old_identity(image_folder):
    path = image_folder / "img0.jpg"
    batch = todo_rows([path])
    batch[schema.SIZE] = batch[schema.SIZE] + 1  # listed at another size
    spec = model.ImageSpec(resize=Resize(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    out = _decode(batch, {schema.PIXELS: spec})
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
    monkeypatch.setattr(reading, "READ_BACKOFF_S", 0.01)
    try:
        assert reading._read(f"http://127.0.0.1:{server.server_port}/img0.jpg", StorageConfig(), len(body)) == body
    finally:
        server.shutdown()
    assert len(seen) == 3


def test_objects_over_the_size_cap_are_never_read(image_folder, tmp_path):
    """A sparse 10 GiB file is refused from its listed size; one listed too small is cut off at the cap."""
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(10 * 2**30)
    spec = model.ImageSpec(resize=Resize(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    lying = todo_rows([huge, image_folder / "img0.jpg"])
    lying[schema.SIZE] = np.array([1000.0, lying[schema.SIZE][1]])  # a manifest that got the size wrong
    for batch in (todo_rows([huge, image_folder / "img0.jpg"]), lying):
        out = _decode(batch, {schema.PIXELS: spec}, max_file_mb=1)
        assert list(out[schema.ERROR_TYPE]) == ["too_large", None]
        assert "MiB limit (--max-image-mb)" in out[schema.ERROR][0]


def test_decoding_runs_under_the_time_budget(image_folder):
    """The stage's decoding process stops answering (stopped) for one image: that image is a timeout row."""
    import os
    import signal

    from captioner.media import sandbox

    limits = DecodeConfig(timeout_s=0.05)
    decoder = sandbox.shared(limits.formats, limits.max_pixels, limits.timeout_s, limits.memory_mb)
    spec = model.ImageSpec(resize=Resize(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    _decode(todo_rows([image_folder / "img1.jpg"]), {schema.PIXELS: spec}, timeout_s=0.05)  # its child started
    os.kill(decoder._proc.pid, signal.SIGSTOP)
    out = _decode(todo_rows([image_folder / "img1.jpg", image_folder / "img0.jpg"]), {schema.PIXELS: spec},
                  timeout_s=0.05)
    assert list(out[schema.ERROR_TYPE]) == ["timeout", None]


def test_a_decoding_process_that_cannot_start_is_a_transient_error_row_not_a_failed_batch(image_folder, monkeypatch):
    from captioner.media import sandbox

    monkeypatch.setattr(sandbox, "_shared", {})
    monkeypatch.setattr(sandbox.sys, "executable", "/bin/false")  # the child exits before it says it is ready
    spec = model.ImageSpec(resize=Resize(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    out = _decode(todo_rows([image_folder / "img0.jpg", image_folder / "img1.jpg"]), {schema.PIXELS: spec})
    assert list(out[schema.ERROR_TYPE]) == ["decoder_unavailable"] * 2
    assert "did not start" in out[schema.ERROR][0] and "decoder_unavailable" in schema.TRANSIENT_ERRORS
