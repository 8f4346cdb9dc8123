"""Kernel table: gram, combine, flatten and a whole surgery step per backend, as ratios.

    python -m benchmarks.kernels            # T ∈ {2,4,8,16}, P ∈ {1e5,1e6,1e7}
    python -m benchmarks.kernels --quick    # smaller grid, for a smoke run

For each (T, P) it prints milliseconds per backend, the achieved GB/s, the ratio of the time to
the memory-bandwidth bound (bytes the operation must move ÷ STREAM-like copy bandwidth measured
in the same run; 1.0 is the bound), and the speed-up of the fused Gram over stack+mm.
Bytes moved (fp32): gram reads J (4TP); combine reads J and writes out (4(T+1)P); flatten
reads the T gradients and writes J (8TP); the whole step is their sum (4(4T+1)P).
"""

from __future__ import annotations

import argparse

import torch

from gradsurg.kernels import cpp, reference
from gradsurg.methods import PCGrad

from ._harness import bytes_moved, copy_bandwidth, machine_facts, median_time, random_grads, split_rows

BACKENDS = {"torch": reference, "cpp": cpp}


def run(tasks: list[int], sizes: list[int]) -> list[dict[str, object]]:
    """Measure every case; returns one dict per (T, P, backend)."""
    bandwidth = copy_bandwidth()
    print(f"machine: {machine_facts()}")
    print(f"STREAM-like copy bandwidth: {bandwidth / 1e9:.1f} GB/s\n")
    print("| T | P | backend | gram ms | ×bound | combine ms | ×bound | flatten ms | ×bound "
          "| step ms | ×bound | GB/s step | gram vs stack+mm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for num_tasks in tasks:
        for size in sizes:
            grads = random_grads(num_tasks, size)
            param_sizes = [g.numel() for g in grads[0]]
            matrix = torch.empty(num_tasks, size)
            views = split_rows(matrix, param_sizes)
            out = torch.empty(size)
            stack_mm = median_time(lambda: (lambda j: j @ j.T)(torch.stack([torch.cat(r) for r in grads])))
            method = PCGrad()
            for name, kernels in BACKENDS.items():
                if name == "cpp" and not cpp.available():
                    continue
                for t in range(num_tasks):
                    kernels.flatten_into(views[t], grads[t])

                def step(kernels=kernels):
                    for t in range(num_tasks):
                        kernels.flatten_into(views[t], grads[t])
                    weights = method.weights(kernels.gram(matrix))
                    kernels.combine_into(out, matrix, weights)

                times = {
                    "gram": median_time(lambda: kernels.gram(matrix)),
                    "combine": median_time(lambda: kernels.combine_into(out, matrix, torch.ones(num_tasks))),
                    "flatten": median_time(lambda: [kernels.flatten_into(views[t], grads[t]) for t in range(num_tasks)]),
                    "step": median_time(step),
                }
                moved = {k: bytes_moved(k, num_tasks, size) for k in times}
                bound = {k: moved[k] / bandwidth for k in moved}
                row = {"T": num_tasks, "P": size, "backend": name, "bandwidth_GBps": bandwidth / 1e9,
                       "stack_mm_ms": stack_mm * 1e3}
                for k in times:
                    row[f"{k}_ms"] = times[k] * 1e3
                    row[f"{k}_x_bound"] = times[k] / bound[k]
                rows.append(row)
                print(f"| {num_tasks} | {size:.0e} | {name} | {row['gram_ms']:.2f} | {row['gram_x_bound']:.2f} "
                      f"| {row['combine_ms']:.2f} | {row['combine_x_bound']:.2f} | {row['flatten_ms']:.2f} "
                      f"| {row['flatten_x_bound']:.2f} | {row['step_ms']:.2f} | {row['step_x_bound']:.2f} "
                      f"| {moved['step'] / times['step'] / 1e9:.1f} | {stack_mm / times['gram']:.1f}× |")
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Parse arguments, run the grid, print the table; returns the measured rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T ∈ {2, 8}, P ∈ {1e5, 1e6}")
    parser.add_argument("--tasks", default="2,4,8,16", help="comma-separated T values")
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="comma-separated P values")
    args = parser.parse_args(argv)
    tasks = [2, 8] if args.quick else [int(t) for t in args.tasks.split(",")]
    sizes = [100_000, 1_000_000] if args.quick else [int(float(p)) for p in args.sizes.split(",")]
    return run(tasks, sizes)


if __name__ == "__main__":
    main()
