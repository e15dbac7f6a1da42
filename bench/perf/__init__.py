"""`gan-bench perf bench`: how fast trials run on this machine, measured against the textbook loop.

One process, one device. Sections (each prints a progress line while it runs):

* throughput: images/s of the textbook loop (torchvision `datasets.MNIST` + `DataLoader(shuffle=True)`
  + `ToTensor`/`Normalize`, fp32, `.item()` every step, as in pytorch/examples' dcgan), of the harness
  loop with the fast path switched off (`train.fast=false`, fp32, NCHW) and of the harness loop as
  configured (the defaults: the fast path), same model, batch size and number of steps; the loops run
  in rotation for `--rounds` rounds and each reports its best round (robust to bursts of other work);
* compute: FLOPs per image of each loop (torch's `FlopCounterMode`), the GFLOP/s each reaches, and
  a measured conv peak of the device (fp32, and bf16 when native): how much faster a loop could get;
* evaluation: `evaluate_gan` (IS, TARR, per-class accuracy, FID, D's test accuracy) on N generated
  and N real images, first call (real features computed) and second call (real features cached);
* tracking: one short trial logged to a temporary MLflow SQLite store vs the same trial with tracking
  off; the overhead is the time spent inside tracking calls over the untracked trial time (the A/B
  wall-clock difference is reported too, but on a shared machine it is noisier than 3%);
* concurrency: aggregate images/s of K trials in K processes at once (GPU: sharing the device;
  CPU: the cores split between them, `min(threads, cores // K)` torch threads each);
* memory: peak host RSS (this process and the largest worker) and, on CUDA, peak allocated memory.

`gan-bench perf parity` trains the same short runs with the plain path and the fast path
(3 seeds each) and tells whether TARR / IS / FID differ by more than the seed-to-seed spread.

The package, one module per concept:

- `common`: constants (the plain path, the ablations), progress, memory and FLOP helpers;
- `loops`: the textbook loop and the harness loop;
- `compute`: FLOPs per image and the device's measured conv peak;
- `evaluation`: evaluation time and tracking overhead;
- `concurrency`: K trials in K processes;
- `groups`: K members in one grouped step vs the same K runs one by one;
- `benchmark`: all figures in one dict (`BenchmarkOptions` says how much to measure), and the printed table;
- `parity`: fast path vs plain path over seeds;
- `gpu_check`: the figures to take on a GPU (`gan-bench perf gpu-check`);
- `estimate`, `budget`: how long a study takes here, and the largest scale that fits a time budget.

The command line (`gan-bench perf bench | parity | gpu-check`) is `bench.cli.perf`.
"""

from __future__ import annotations

from bench.perf.benchmark import BenchmarkOptions, format_benchmark, run_benchmark
from bench.perf.common import ABLATIONS, PARITY_MODEL, PLAIN, count_flops
from bench.perf.compute import compute_use, conv_peak_gflops, harness_flops_per_image, textbook_flops_per_image
from bench.perf.loops import harness_loop, textbook_loop, torchvision_root
from bench.perf.parity import format_parity, run_parity

__all__ = ["ABLATIONS", "BenchmarkOptions", "PARITY_MODEL", "PLAIN", "compute_use", "conv_peak_gflops", "count_flops",
           "format_benchmark", "format_parity", "harness_flops_per_image", "harness_loop",
           "run_benchmark", "run_parity", "textbook_flops_per_image", "textbook_loop", "torchvision_root"]
