"""CPU time and peak memory per 256-pixel thumbnail of a 4000x3000 JPEG: Pillow (as the
app runs it, draft mode on; and with draft mode off, for scale) against pyvips
(`thumbnail_buffer`: shrink-on-load, untrusted loaders blocked).

Each library runs in a fresh process of its own, so peak memory is that library's alone:
CPU is user + system time of the process (every thread) over `--count` thumbnails, peak
memory is the process's maximum resident set (VmHWM), and the increase over the same process just
before its first thumbnail. pyvips is not a dependency of the app: point `--vips-python` at
an interpreter that has it (`pip install pyvips pyvips-binary` in a throwaway venv); without
one, only Pillow is measured.

Run: `python -m bench.thumbnail_libraries --vips-python /tmp/vipsbench/bin/python`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_MEASURE = """
import json, os, resource, sys, time
path, count, size, library = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
data = open(path, "rb").read()
if library.startswith("pillow"):
    sys.path.insert(0, os.environ["BENCH_ROOT"])
    from PIL import Image
    from app.images.thumbnail_worker import render_thumbnail
    if library == "pillow-no-draft":
        from PIL import JpegImagePlugin
        JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None
    def make():
        return render_thumbnail(data, "JPEG", size, 50_000_000)[0]
else:
    import pyvips
    pyvips.block_untrusted_set(True)
    pyvips.cache_set_max(0)
    def make():
        image = pyvips.Image.thumbnail_buffer(data, size, fail_on="error")
        return image.webpsave_buffer(Q=80, keep="none")
def rusage():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and
    # exec, while VmHWM belongs to this process's own memory.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    status = open("/proc/self/status").read().splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return usage.ru_utime + usage.ru_stime, peak
cpu_before, rss_before = rusage()
wall_before = time.perf_counter()
for _ in range(count):
    output = make()
wall = time.perf_counter() - wall_before
cpu_after, rss_after = rusage()
print(json.dumps({
    "library": library,
    "count": count,
    "cpu_ms_per_thumbnail": round((cpu_after - cpu_before) * 1000 / count, 1),
    "wall_ms_per_thumbnail": round(wall * 1000 / count, 1),
    "peak_rss_mib": round(rss_after / 1024, 1),
    "peak_rss_increase_mib": round((rss_after - rss_before) / 1024, 1),
    "output_bytes": len(output),
}))
"""


def make_photo(path: Path) -> int:
    """A 4000x3000 JPEG at quality 90 with a photo's amount of detail (noise over
    gradients), so its decoder has real work to do; returns its size in bytes."""
    from PIL import Image

    width, height = 4000, 3000
    gradient = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 40)
    photo = Image.merge("RGB", (gradient, noise, gradient.rotate(180)))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
    return len(buffer.getvalue())


def measure(python: str, library: str, photo: Path, count: int, size: int) -> dict[str, Any]:
    env = {**os.environ, "BENCH_ROOT": str(ROOT), "VIPS_CONCURRENCY": "1"}
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [python, "-c", textwrap.dedent(_MEASURE), str(photo), str(count), str(size), library],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vips-python", help="an interpreter with pyvips installed")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--output", type=Path)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        photo = Path(directory) / "photo-4000x3000.jpg"
        photo_bytes = make_photo(photo)
        runs = [
            measure(sys.executable, "pillow", photo, arguments.count, arguments.size),
            measure(sys.executable, "pillow-no-draft", photo, arguments.count, arguments.size),
        ]
        if arguments.vips_python:
            runs.append(
                measure(arguments.vips_python, "pyvips", photo, arguments.count, arguments.size)
            )
    report = {
        "photo": {"width": 4000, "height": 3000, "bytes": photo_bytes},
        "size": arguments.size,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "runs": runs,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if arguments.output:
        arguments.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
