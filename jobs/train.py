"""Entry point for `ray job submit -- python jobs/train.py --data D --output-dir O [options]`.

Takes the same options as `captioner train`; with `--workers N` training runs under Ray Train.
"""

import sys

from captioner.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
