"""Entry point for `ray job submit -- python jobs/caption.py INPUT OUTPUT [options]`.

Takes the same options as `captioner run`; inside a Ray job, RAY_ADDRESS points at the cluster.
"""

import sys

from captioner.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
