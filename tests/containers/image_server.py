"""A tiny image host for the compose test: serves real PNGs at /pixel.png and /doomed.png
on port 8000 (the test deletes /srv/images/doomed.png to break that link).

Runs inside the stand-in python image (stdlib only); the API and worker containers check
http://images:8000/... over the compose network.
"""

import http.server
import os
import struct
import zlib


def png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xc8\x1e\x1e" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


os.makedirs("/srv/images", exist_ok=True)
for name in ("pixel.png", "doomed.png"):
    with open(f"/srv/images/{name}", "wb") as out:
        out.write(png())
os.chdir("/srv/images")
# Inside its container: every interface of that container, reachable on the compose network.
ADDRESS = ("0.0.0.0", 8000)  # noqa: S104
http.server.ThreadingHTTPServer(ADDRESS, http.server.SimpleHTTPRequestHandler).serve_forever()
