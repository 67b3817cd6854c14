import io

import pyarrow.parquet as pq
from PIL import Image

from captioner.train.grammar import caption
from captioner.train.scenes import scenes
from captioner.train.synth import write_parquet


def test_write_parquet_rows_cycle_through_languages(tmp_path):
    path = tmp_path / "nested" / "train.parquet"
    assert write_parquet(str(path), 6, seed=3, size=48, image_format="png", row_group_size=4) == 6
    table = pq.read_table(path)
    assert table.column_names == ["image", "caption", "lang"]
    assert table.column("lang").to_pylist() == ["en", "fr", "de", "es", "en", "fr"]
    expected = [caption(s, lang) for s, lang in zip(scenes(6, seed=3), table.column("lang").to_pylist())]
    assert table.column("caption").to_pylist() == expected
    image = Image.open(io.BytesIO(table.column("image")[0].as_py()))
    assert (image.format, image.size) == ("PNG", (48, 48))
