#!/usr/bin/env python
"""Cost of the old-photo degradation (agekit.data.degrade) on a (64,3,128,128) uint8 batch, 1 thread.

    OMP_NUM_THREADS=1 python benchmarks/degrade_speed.py [--reps 15]

Reports the median wall and CPU (process) time per batch for p = 0.25, 0.5, 1 (training's
``data.degrade_p``), the benchmark's seeded mode, and BatchAugment for reference, with the load
average: a busy machine inflates every number.
"""
from __future__ import annotations

import argparse
import os
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    from agekit.data.batch_augment import BatchAugment
    from agekit.data.degrade import OldPhotoDegrade, degrade_indexed

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.randint(0, 256, (64, 3, 128, 128), generator=g).float(), 5, 1, 2)
    x = x.to(torch.uint8)
    cases = {f"degrade p={p:g}": OldPhotoDegrade(p) for p in (0.25, 0.5, 1.0)}
    cases["benchmark mode (seeded per image, p=1)"] = lambda t: degrade_indexed(t, range(64), 0)
    cases["BatchAugment (reference)"] = BatchAugment()
    load0 = os.getloadavg()[0]
    print(f"load average before: {load0:.2f} on {os.cpu_count()} cores")
    for name, fn in cases.items():
        fn(x)
        wall, cpu = [], []
        for _ in range(args.reps):
            t0, c0 = time.perf_counter(), time.process_time()
            fn(x)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        wall.sort(), cpu.sort()
        print(f"{name:42s} wall median {1000 * wall[len(wall) // 2]:6.1f} ms (min {1000 * wall[0]:5.1f})  "
              f"cpu median {1000 * cpu[len(cpu) // 2]:6.1f} ms")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
