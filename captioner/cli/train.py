"""``captioner train``: train or fine-tune a captioner, in this process or under Ray Train."""

import argparse
import json
import os

from ..config import ConfigError
from ..train.config import TrainConfig
from .options import add_storage_arguments, storage_config


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``train``."""
    tr = commands.add_parser("train", help="train or fine-tune a captioner on (image, caption, lang) rows",
                             description="Train a VisionEncoderDecoder captioner (ViT encoder, GPT-2 decoder, "
                             "cross-attention) in staged steps, with validation loss, perplexity and BLEU per epoch "
                             "and resumable safetensors checkpoints. With --workers it runs under Ray Train.")
    tr.add_argument("--data", required=True, help="Parquet file or folder (local or s3://) with columns image "
                    "(encoded bytes), caption and lang")
    tr.add_argument("--output-dir", required=True, help="local folder that receives the model, tokenizer and "
                    "image processor")
    tr.add_argument("--checkpoint-dir", help="resumable checkpoints (default: OUTPUT_DIR/checkpoints); rerun the "
                    "same command to resume after an interruption")
    tr.add_argument("--init-model", help="a trained captioner to continue from, e.g. to add a language")
    tr.add_argument("--encoder", help="pretrained ViT (hub id or folder); only cross-attention starts fresh")
    tr.add_argument("--decoder", help="pretrained GPT-2 with its tokenizer (hub id or folder); keeps its LM head")
    tr.add_argument("--encoder-pretrain-epochs", type=int, default=TrainConfig.encoder_pretrain_epochs,
                    help="a fresh encoder first learns alone for this many epochs (default: %(default)s)")
    tr.add_argument("--image-size", type=int, default=TrainConfig.image_size,
                    help="input side in pixels of a fresh encoder (default: %(default)s)")
    tr.add_argument("--patch-size", type=int, default=TrainConfig.patch_size,
                    help="ViT patch side in pixels (default: %(default)s)")
    tr.add_argument("--stage-epochs", type=int, nargs=3, default=TrainConfig.stage_epochs,
                    metavar=("CROSS", "DECODER", "ALL"),
                    help="epochs training cross-attention only, then with the decoder, then everything "
                    "(default: %(default)s)")
    tr.add_argument("--batch-size", type=int, default=TrainConfig.batch_size,
                    help="images per optimizer step per worker (default: %(default)s)")
    tr.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate,
                    help="peak learning rate; linear warm-up then cosine decay (default: %(default)s)")
    tr.add_argument("--val-fraction", type=float, default=TrainConfig.val_fraction,
                    help="share of images held out for validation loss, perplexity and BLEU (default: %(default)s)")
    tr.add_argument("--num-threads", type=int, help="torch CPU threads per process")
    tr.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed for the split, init and shuffling")
    tr.add_argument("--stop-after-steps", type=int, help="stop after this many steps, leaving a checkpoint")
    tr.add_argument("--workers", type=int, default=0, help="Ray Train workers; 0 trains in this process")
    tr.add_argument("--gpu", action="store_true", help="one GPU per Ray Train worker")
    add_storage_arguments(tr)
    tr.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    try:
        config = TrainConfig(
            data=args.data, output_dir=args.output_dir, checkpoint_dir=args.checkpoint_dir, storage=storage_config(args),
            init_model=args.init_model, encoder=args.encoder, decoder=args.decoder,
            encoder_pretrain_epochs=args.encoder_pretrain_epochs, image_size=args.image_size,
            patch_size=args.patch_size, stage_epochs=tuple(args.stage_epochs), batch_size=args.batch_size,
            learning_rate=args.learning_rate, val_fraction=args.val_fraction, num_threads=args.num_threads,
            seed=args.seed, stop_after_steps=args.stop_after_steps,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.workers:
        import ray

        from ..train.distributed import train_distributed

        ray.init(address=os.environ.get("RAY_ADDRESS"))
        metrics = train_distributed(config, num_workers=args.workers, use_gpu=args.gpu)
    else:
        from ..train.loop import train

        metrics = train(config)
    print(json.dumps(metrics, indent=1))
    return 0
