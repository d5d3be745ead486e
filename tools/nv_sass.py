#!/usr/bin/env python3
"""Disassemble the machine code NVIDIA's driver compiled kiln's kernels into.

NVIDIA's Vulkan driver keeps what it compiles in a disk cache (under the directory named by
`__GL_SHADER_DISK_CACHE_PATH`, in `GLCache/<hash>/<hash>/<name>.toc` and `.bin`). This script
unpacks every compiled kernel of such a cache and runs `nvdisasm` on it, writing one
`oNNN.txt` per kernel into OUT_DIR and a line per kernel (register count, fmas, workgroup-memory
loads, lines) to stdout. `kiln kernel-stats` prints the same register counts with kernel names;
match them up by order (both follow the order in which kiln compiles its kernels) and by register count.

On the GPU machine:
    __GL_SHADER_DISK_CACHE_PATH=/tmp/glc ./kiln kernel-stats; tar czf $OUT/glc.tgz /tmp/glc
Here (nvdisasm from the `nvidia-cuda-nvdisasm` wheel, zstd from the system):
    python3 tools/nv_sass.py glc/tmp/glc out --nvdisasm PATH/TO/nvdisasm

The cache layout (as observed with driver 580, and described by nvcachetools' format notes):
the .toc holds a 32-byte header, then 24-byte entries whose fifth and sixth u32 are an
entry's offset in the .bin and its size; an entry in the .bin is a 36-byte header (magic
0x9846A19D) followed by the packed object, zstd-compressed when it starts with zstd's magic.
A compiled compute kernel unpacks to "NVDANVVM" followed by an "NVuc" object, which nvdisasm
reads directly.
"""

import argparse
import pathlib
import re
import struct
import subprocess
import sys

ENTRY_MAGIC = 0x9846A19D
ZSTD_MAGIC = 0xFD2FB528
TOC_HEADER = 0x20
TOC_ENTRY = 0x18
BIN_ENTRY_HEADER = 0x24
KERNEL_PREFIX = b"NVDANVVM"


def entries(toc: pathlib.Path):
    """Yields the unpacked objects of one cache file pair."""
    table = toc.read_bytes()
    data = toc.with_suffix(".bin").read_bytes()
    if len(table) < TOC_HEADER or (len(table) - TOC_HEADER) % TOC_ENTRY:
        raise ValueError(f"{toc}: unexpected size {len(table)}")
    for i in range((len(table) - TOC_HEADER) // TOC_ENTRY):
        _, _, _, _, offset, size = struct.unpack_from("<6I", table, TOC_HEADER + i * TOC_ENTRY)
        (magic,) = struct.unpack_from("<I", data, offset)
        if magic != ENTRY_MAGIC or size < 4:
            print(f"{toc.name} entry {i}: not a cache entry, skipped", file=sys.stderr)
            continue
        packed = data[offset + BIN_ENTRY_HEADER : offset + BIN_ENTRY_HEADER + size - 4]
        if len(packed) >= 4 and struct.unpack_from("<I", packed)[0] == ZSTD_MAGIC:
            run = subprocess.run(["zstd", "-d", "-c"], input=packed, capture_output=True, check=True)
            yield run.stdout
        else:
            yield packed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache_dir", type=pathlib.Path, help="the __GL_SHADER_DISK_CACHE_PATH")
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--nvdisasm", default="nvdisasm")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for toc in sorted(args.cache_dir.glob("**/*.toc")):
        for obj in entries(toc):
            if not obj.startswith(KERNEL_PREFIX):
                continue
            nvuc = args.out_dir / f"o{n:03d}.nvuc"
            nvuc.write_bytes(obj[len(KERNEL_PREFIX) :])
            text = subprocess.run(
                [args.nvdisasm, str(nvuc)], capture_output=True, text=True
            ).stdout
            nvuc.with_suffix(".txt").write_text(text)
            regs = re.search(r"Register count=(\d+)", text)
            print(
                f"{nvuc.with_suffix('.txt').name} registers {regs.group(1) if regs else '?'}"
                f" FFMA {text.count('FFMA')} LDS {text.count(' LDS')}"
                f" lines {text.count(chr(10))}"
            )
            n += 1
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
