#!/usr/bin/env python3
"""Seeds the diff_objects fuzzer with real object pairs from klpx's test cache.

Each seed is a 4-byte little-endian split point followed by the original and the patched object, as the
fuzz target expects. Usage: fuzz/seed.py [CACHE_DIR] (default: $KLPX_CACHE or ~/.cache/klpx).
"""
import glob, os, struct, sys

cache = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KLPX_CACHE", os.path.expanduser("~/.cache/klpx"))
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "diff_objects")
os.makedirs(out, exist_ok=True)
n = 0
for orig in sorted(glob.glob(os.path.join(cache, "corpus", "*", "*", "orig.o"))):
    patched = os.path.join(os.path.dirname(orig), "patched.o")
    if not os.path.exists(patched):
        continue
    a, b = open(orig, "rb").read(), open(patched, "rb").read()
    name = os.path.relpath(os.path.dirname(orig), os.path.join(cache, "corpus")).replace("/", "-")
    with open(os.path.join(out, name), "wb") as f:
        f.write(struct.pack("<I", len(a)) + a + b)
    n += 1
print(f"{n} seeds in {out}")
