"""Azurite, Microsoft's own Azure Storage emulator, on 127.0.0.1, reached through adlfs as Azure Blob Storage is.

It comes from the npm registry, installed once per machine under the user's cache (a lock keeps two test processes
from installing it together), and runs in memory, one server per test session.
"""

import fcntl
import os
import socket
import subprocess
import time
from pathlib import Path

VERSION = "3.37.0"
HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "captioner-tests" / f"azurite-{VERSION}"
# The emulator's well-known development account, as Microsoft documents it: not a secret.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def installed() -> Path:
    """The azurite-blob command, installed from npm on first use."""
    command = HOME / "node_modules" / ".bin" / "azurite-blob"
    HOME.mkdir(parents=True, exist_ok=True)
    with open(HOME / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not command.exists():
            subprocess.run(["npm", "install", "--prefix", str(HOME), "--no-audit", "--no-fund", "--silent",
                            f"azurite@{VERSION}"], check=True, timeout=600)
    return command


def connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")


def start(port: int) -> subprocess.Popen:
    """Azurite's blob service on ``port``, in memory, once it accepts connections."""
    server = subprocess.Popen([str(installed()), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                               "--inMemoryPersistence", "--skipApiVersionCheck", "--silent"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Azurite did not start on port {port}")
            time.sleep(0.1)
