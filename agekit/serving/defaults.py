"""The service's default limits, in one import-free place (read by ``ServeConfig`` and by ``agekit serve --help``)."""
from __future__ import annotations

HOST = "127.0.0.1"  # loopback only unless told otherwise
PORT = 8000
MAX_BYTES = 20 * 1024 * 1024  # largest upload
MAX_PIXELS = 64_000_000  # = agekit.data.imageio.MAX_PIXELS (checked by the tests), before any pixel is decoded
TIMEOUT_S = 30.0  # for the answer, once the upload has arrived (504 after)
UPLOAD_TIMEOUT_S = 60.0  # for the upload to arrive (408 after): a stalled client cannot hold a connection forever
MAX_QUEUE = 32  # requests that may wait for a worker
RETRY_AFTER_S = 1  # what a 503 tells the client to wait
