from captioner.media.image import Resize
from captioner.train.data import load_examples
from captioner.train.synth import write_parquet


def test_training_reads_a_folder_of_parquet_files_on_s3(s3, s3_server):
    fs, bucket = s3
    options = {"endpoint_url": s3_server}
    write_parquet(f"s3://{bucket}/train/part-0.parquet", 5, seed=0, size=32, options=options)
    write_parquet(f"s3://{bucket}/train/part-1.parquet", 3, seed=1, size=32, options=options)
    examples = load_examples(f"s3://{bucket}/train", Resize(16, 16), val_fraction=0.5, options=options)
    assert examples.pixels.shape == (8, 3, 16, 16)
    assert examples.langs == ["en", "fr", "de", "es", "en", "en", "fr", "de"]
