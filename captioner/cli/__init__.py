"""The ``captioner`` command: parse options into config dataclasses, run, print a summary.

One module per command group; each imports its heavy libraries (Ray, torch, transformers) only when its command
runs, so ``captioner --help``, ``query`` and ``stats`` start fast.
"""

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..config import UserError
from . import results, run, train

log = logging.getLogger("captioner")

# Store clients that log requests and their headers (key ids, signatures; Azure's SDK every request at info level):
# kept out of a normal run and of -v.
QUIET_LOGGERS = ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "aiohttp", "azure", "adlfs", "gcsfs",
                 "google")


def build_parser() -> argparse.ArgumentParser:
    """Every command and option; ``--help`` on any of them explains each option."""
    parser = argparse.ArgumentParser(prog="captioner", description="Batch, offline, multilingual image captioning "
                                     "into Parquet, on one machine or a Ray cluster.")
    parser.add_argument("--version", action="version", version=f"captioner {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_commands(commands)
    results.add_commands(commands)
    train.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a failure the user can fix is one log line and exit status 2 (1 for a failed run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 2
    except UserError as exc:
        log.error("%s%s", exc.prefix, exc)
        return exc.exit_status
