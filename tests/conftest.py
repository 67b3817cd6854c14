"""Shared fixtures: tiny models built from configs, generated images, a real local S3 server."""

import io
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

WORDS = "a an the red green blue yellow circle square triangle star on above below left right of and".split()
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def build_tiny_model(path: Path, languages: tuple[str, ...] = (), image_size: int = 32) -> Path:
    """A random ViT + GPT-2 VisionEncoderDecoderModel with a word-level tokenizer, saved like a hub checkpoint.

    With ``languages`` the tokenizer carries "<|xx|>" language tokens, as multilingual decoders do.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import (
        GPT2Config,
        PreTrainedTokenizerFast,
        ViTConfig,
        ViTImageProcessorPil,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
    )

    lang_tokens = [f"<|{lang}|>" for lang in languages]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + lang_tokens + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens=lang_tokens,
    )
    torch.manual_seed(0)
    encoder = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64)
    decoder = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig(encoder=encoder, decoder=decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with torch.no_grad():
        # Random weights often pick a special token first (an empty caption); make words likelier.
        model.decoder.get_output_embeddings().weight[: len(SPECIALS) + len(lang_tokens)].zero_()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    ViTImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


SENTENCES = ["a red circle above a blue square", "un cercle rouge au-dessus d'un carré bleu", "a green star",
             "une étoile verte", "ein roter Kreis", "un círculo rojo"]


def build_tiny_marian(path: Path) -> Path:
    """A random MarianMT model with a real MarianTokenizer (SentencePiece models trained here)."""
    import json

    import sentencepiece as spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    path.mkdir(parents=True, exist_ok=True)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SENTENCES * 10), model_writer=proto, vocab_size=40,
                                   character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    for name in ("source.spm", "target.spm"):
        (path / name).write_bytes(proto.getvalue())
    pieces = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    vocab = {"</s>": 0, "<unk>": 1, "<pad>": 2}
    for i in range(pieces.get_piece_size()):
        vocab.setdefault(pieces.id_to_piece(i), len(vocab))
    (path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = MarianTokenizer(str(path / "source.spm"), str(path / "target.spm"), str(path / "vocab.json"))
    torch.manual_seed(1)
    config = MarianConfig(vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                          max_position_embeddings=64, pad_token_id=2, eos_token_id=0, decoder_start_token_id=2,
                          forced_eos_token_id=0)
    model = MarianMTModel(config)
    model.generation_config.num_beams = 3  # as opus-mt models do: translations use the model's own beam size
    with torch.no_grad():  # as for the captioner: keep random translations from ending at once
        model.final_logits_bias[0, :3] = -5.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_clip(path: Path, image_size: int = 32) -> Path:
    """A random CLIP model with a word-level tokenizer and a CLIP image processor (resize + centre crop)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    torch.manual_seed(2)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": image_size},
                          crop_size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_marian(tmp_path_factory) -> Path:
    return build_tiny_marian(tmp_path_factory.mktemp("tiny-marian"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def jpeg_bytes(seed: int, size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def captioner(tiny_model):
    """The tiny ViT-GPT2 captioner, loaded once for the session."""
    from captioner.config import ModelConfig
    from captioner.models import loading

    return loading.load(ModelConfig(name=str(tiny_model)))


def decode_at(data: bytes, resize) -> np.ndarray:
    """uint8 (H, W, 3) of an image at one model size, decoded as the pipeline does."""
    from captioner.config import DecodeConfig
    from captioner.media import image

    limits = DecodeConfig()
    return image.decode(data, [resize], formats=limits.formats, max_pixels=limits.max_pixels).pixels[0]


def normalised(captioner, pixels: np.ndarray) -> torch.Tensor:
    """A batch as the captioner's device takes it."""
    from captioner.models.preprocess import pixel_values

    return pixel_values(pixels, captioner.info.image, captioner.device, captioner.dtype)


@pytest.fixture(scope="session")
def pixels():
    """Four 32 px JPEGs, decoded."""
    from captioner.media.image import Resize

    return np.stack([decode_at(jpeg_bytes(i), Resize(32, 32)) for i in range(4)])


@pytest.fixture(scope="session")
def demo():
    """The bundled demo model."""
    from captioner.config import DEMO_MODEL, ModelConfig
    from captioner.models import loading

    return loading.load(ModelConfig(name=DEMO_MODEL))


@pytest.fixture(scope="session")
def scenes(demo):
    """16 synthetic scenes at the demo model's size: it captions them and ends each caption early."""
    from captioner.train import scenes as synthetic

    size = demo.info.image.resize.height
    return np.stack([np.asarray(synthetic.render(scene, size)) for scene in synthetic.scenes(16, seed=99)])


@pytest.fixture(scope="session")
def translator(tiny_marian):
    from captioner.config import ModelConfig
    from captioner.models import loading

    return loading.load_translator(ModelConfig(name=str(tiny_marian)))


@pytest.fixture(scope="session")
def scorer(tiny_clip):
    from captioner.config import ModelConfig
    from captioner.models import loading

    return loading.load_scorer(ModelConfig(name=str(tiny_clip)))


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Six good images in nested folders, and three bad files that must become error rows."""
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    for i in range(4):
        (root / f"img{i}.jpg").write_bytes(jpeg_bytes(i))
    (root / "nested" / "deep.png").write_bytes(jpeg_bytes(10, fmt="PNG"))
    (root / "nested" / "wide.JPG").write_bytes(jpeg_bytes(11, size=(120, 30)))
    (root / "truncated.jpg").write_bytes(jpeg_bytes(12)[:300])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("this is a text file, not a picture\n")
    (root / "readme.txt").write_text("ignored: not an image extension\n")
    return root


GOOD = 6
BAD = {"truncated.jpg": "truncated", "empty.jpg": "empty", "notes.jpg": "not_an_image"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (moto) on 127.0.0.1, reached through s3fs over HTTP."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield f"http://127.0.0.1:{port}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def azurite_server():
    """A real Azure Blob Storage server (Azurite) on 127.0.0.1: its connection string, which adlfs reads from
    AZURE_STORAGE_CONNECTION_STRING as it does on Azure."""
    import signal

    import azurite

    server = azurite.start(free_port())
    port = int(server.args[server.args.index("--blobPort") + 1])
    yield azurite.connection_string(port)
    os.killpg(server.pid, signal.SIGKILL)  # in memory: nothing to flush
    server.wait(30)


@pytest.fixture
def azure(azurite_server, monkeypatch):
    """An adlfs filesystem on the local Azurite, with a fresh container per test; the credentials in the
    environment, where captioner's own processes find them."""
    import uuid

    import adlfs

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server)
    fs = adlfs.AzureBlobFileSystem(connection_string=azurite_server, skip_instance_cache=True)
    container = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(container)
    return fs, container


@pytest.fixture(scope="session")
def gcs_server():
    """A GCS-protocol server (gcp-storage-emulator, from PyPI) on 127.0.0.1, in memory: its address, which gcsfs
    reads from STORAGE_EMULATOR_HOST. It ignores generation preconditions, so it serves gs:// input only."""
    import signal
    import subprocess
    import sys
    import time

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                               "--port", str(port), "--in-memory"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "the GCS emulator did not start"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(30)


@pytest.fixture(scope="session")
def local_ray(s3_server):
    """One local Ray for the tests that run the job in-process; started after the S3 credentials are set."""
    import ray

    start_local_ray()
    yield
    ray.shutdown()


def start_local_ray(**kwargs) -> None:
    """The tests' local Ray: two CPUs and no dashboard, so it never takes a port a cluster test needs."""
    import ray

    # address "local": a Ray of its own even while another test's `captioner run` has one up, which a bare
    # ray.init() would join, and whose end would then take this process down with it
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", **kwargs)


@pytest.fixture
def s3(s3_server):
    """An s3fs filesystem on the local server, with a fresh bucket per test."""
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_server, skip_instance_cache=True)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    return fs, bucket


@pytest.fixture
def faulty_s3(s3_server):
    """A fault-injecting proxy in front of the local S3 server; set its rates (and denials) in the test."""
    from faulty_proxy import FaultyProxy

    proxy = FaultyProxy(s3_server)
    yield proxy
    proxy.close()
