import os
import shutil
import subprocess
from pathlib import Path

import pytest

from captioner import query, report
from captioner.run import writing
from captioner.store import state, writer
from captioner.config import StorageConfig
from conftest import jpeg_bytes
from results import image_results, mixed_output

ENGLISH = "two children playing football in a park"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture
def output_with_images(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    uris = []
    for i in range(3):
        (photos / f"p{i}.jpg").write_bytes(jpeg_bytes(i, size=(400, 300)))
        uris.append(str(photos / f"p{i}.jpg"))
    uris.append(str(photos / "gone.jpg"))  # captioned once, deleted since: the report must still render
    batch = image_results(uris + [str(photos / "bad.jpg")], failed={str(photos / "bad.jpg"): "truncated"})
    rows = batch.to_pylist()
    rows[0]["results"][0]["caption"] = "<script>alert(1)</script> a red circle"
    rows[2]["results"][1]["caption"] = ENGLISH  # in a fr row
    batch = writing.identified(type(batch).from_pylist(rows, schema=batch.schema), ("en", "fr"))
    writer.write_shard(batch, str(tmp_path / "out"))
    return tmp_path / "out"


def test_report_is_self_contained_and_escaped(output_with_images):
    page = report.render(str(output_with_images), StorageConfig())
    assert page.count('<img src="data:image/jpeg;base64,') == 3
    assert "image unavailable" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
    assert "<svg" in page and "truncated" in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def _chromium() -> str:
    """Debian's Chromium, installed by the test set-up when missing (root and apt-get needed)."""
    if not shutil.which("chromium") and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=False, capture_output=True)
    path = shutil.which("chromium")
    if not path:
        pytest.skip("Chromium is not installed and apt-get could not install it")
    return path


@pytest.mark.slow
def test_report_shows_images_and_captions_in_chromium(output_with_images, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    page_file = tmp_path / "report.html"
    page_file.write_text(report.render(str(output_with_images), StorageConfig()), encoding="utf-8")
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-quic"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=flags, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(page_file.as_uri())
        images = page.locator(".card img")
        assert images.count() == 3
        for i in range(3):
            assert images.nth(i).is_visible()
            assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
        captions = page.locator(".caption")
        assert captions.count() == 8 and all(captions.nth(i).is_visible() for i in range(8))
        assert "a red circle" in page.inner_text("body")
        assert page.locator(".chart svg text", has_text="captions").count() == 2  # y axis of each language
        assert page.locator(".chart svg text", has_text="score").count() == 2  # x axis

        page.select_option("select[name=lang]", "fr")
        shown = [captions.nth(i) for i in range(captions.count()) if captions.nth(i).is_visible()]
        assert len(shown) == 4 and all(c.inner_text().startswith("fr ") or c.inner_text() == ENGLISH for c in shown)
        assert page.inner_text("#shown") == "4 of 4 shown"
        page.fill("input[name=text]", "P1.JPG")  # any case
        visible = [c.inner_text() for c in captions.all() if c.is_visible()]
        assert len(visible) == 1 and visible[0].startswith("fr ") and visible[0].endswith("/p1.jpg")
        assert page.inner_text("#shown") == "1 of 4 shown"
        page.select_option("select[name=lang]", "")
        page.fill("input[name=text]", "")
        page.fill("input[name=minscore]", "100")
        assert not any(c.is_visible() for c in captions.all()) and page.inner_text("#shown") == "0 of 4 shown"
        page.fill("input[name=minscore]", "")
        page.check("input[name=wrong]")
        visible = [li for li in page.locator(".card li").all() if li.is_visible()]
        assert ENGLISH in [li.locator(".caption").inner_text() for li in visible]
        assert all("reads as en" in li.inner_text() for li in visible) and page.inner_text("#shown") == "1 of 4 shown"
        page.uncheck("input[name=wrong]")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()


def test_a_video_shows_each_segment_as_a_frame_with_its_times(tmp_path):
    from videos import write_video

    clip = write_video(tmp_path / "clip.mp4", seconds=15)
    writer.write_shard(image_results([], videos={str(clip): 2}), str(tmp_path / "out"))
    page = report.render(str(tmp_path / "out"), StorageConfig())
    assert f"{clip} [0:00.0-0:10.0]" in page and f"{clip} [0:10.0-0:20.0]" in page
    assert page.count('<img src="data:image/jpeg;base64,') == 2  # a frame of each segment


# The sample as one DuckDB query defined it before the report found it in a pass that keeps n URIs.
DUCKDB_SAMPLE = """
    SELECT uri, segment, start_s, end_s, lang, caption, score, clip_score, producer, detected_lang,
           detected_lang_confidence FROM captions
    WHERE uri IN (SELECT DISTINCT uri FROM captions ORDER BY hash(uri) LIMIT {n}) AND coalesce(segment, 0) < 6
    ORDER BY hash(uri), segment, lang
"""


@pytest.mark.parametrize("n", [0, 3, 40])
def test_the_sample_is_the_images_whose_uris_hash_lowest(tmp_path, n):
    out = str(tmp_path)
    writer.write_shard(image_results([f"p{i}.jpg" for i in range(12)], videos={"clip.mp4": 8}), out)
    writer.write_shard(image_results([f"p{i}.jpg" for i in range(8, 20)], run_id="r2", langs=("de",)), out)
    shards = state.committed(out)
    want = query.sql(out, DUCKDB_SAMPLE.format(n=n), shards=shards).read_all().to_pylist()
    assert report._sample(out, shards, {}, n) == want
    assert len({row["uri"] for row in want}) == min(n, 21)


def test_the_report_lists_captions_that_read_as_another_language_and_filters_on_them(tmp_path):
    mixed_output(tmp_path)
    page = report.render(str(tmp_path), StorageConfig())
    assert "fr: 1 of 3 rows look like another language (1 not identified)" in page
    assert "<td>en (" in page and page.count("<mark>reads as en</mark>") == 1
    assert page.count('data-wrong="1"') == 1 and "name=wrong type=checkbox" in page
