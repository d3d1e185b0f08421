"""Recorder overhead: FpLinear(784, 1000) trained with and without a Recorder at every=100.

Two identical layers see the same images in the same calls of 100 samples (where
``Recorder.feed`` cuts them), alternately, so the difference is the recording itself. Writes
benchmarks/results/recorder.txt.
"""
from __future__ import annotations

import argparse
import pathlib
import platform
import time

import torch
import torch.nn.functional as F

import fpwb
import fpwb.data
from fpwb.viz.recorder import Recorder

EVERY = 100


def images(n: int) -> tuple[torch.Tensor, str]:
    """n training images flattened to 784 values: Fashion-MNIST via fpwb.data.load when the
    package has it, else sklearn's 8x8 digits upsampled to 28x28."""
    load = getattr(fpwb.data, "load", None)
    if load is not None:
        x, _ = load("fashion_mnist", split="train")
        name = "Fashion-MNIST"
    else:
        from sklearn.datasets import load_digits
        x = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16  # (M, 1, 8, 8)
        x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
        name = "sklearn digits upsampled to 28x28"
    x = torch.as_tensor(x, dtype=torch.float32).flatten(1)
    reps = -(-n // len(x))
    return x.repeat(reps, 1)[:n], name


def lockstep(x: torch.Tensor, seed: int) -> tuple[float, float, Recorder]:
    """Two identical layers fed the same calls of EVERY samples, alternately, one with a Recorder.

    Interleaving call by call (and swapping who goes first) cancels out load from other processes; CPU time of this process
    (not wall time) is summed per layer. Returns (seconds without, seconds with, the recorder)."""
    plain = fpwb.FpLinear(784, 1000, seed=seed)
    recorded = fpwb.FpLinear(784, 1000, seed=seed)
    start = time.process_time()
    recorder = Recorder(recorded, every=EVERY)
    with_rec = time.process_time() - start
    without = 0.0
    for call, i in enumerate(range(0, len(x), EVERY)):
        batch = x[i:i + EVERY]
        for layer in (plain, recorded) if call % 2 == 0 else (recorded, plain):  # alternate who goes first
            start = time.process_time()
            layer(batch)
            seconds = time.process_time() - start
            if layer is plain:
                without += seconds
            else:
                with_rec += seconds
    recorder.close()
    if not torch.equal(plain.weight, recorded.weight):
        raise RuntimeError("the recorded layer diverged from the plain one")
    return without, with_rec, recorder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "recorder.txt"))
    args = parser.parse_args()
    torch.manual_seed(0)
    x, name = images(args.samples)
    torch.set_num_threads(1)  # CPU time of one thread: comparable on a shared machine
    lockstep(x[:500], 0)  # warm-up
    plain, recorded = [], []
    for r in range(args.repeats):
        without, with_rec, recorder = lockstep(x, r)
        plain.append(without)
        recorded.append(with_rec)
    base, with_rec = sum(plain), sum(recorded)
    probe = Recorder(fpwb.FpLinear(784, 1000, seed=0), every=EVERY, snapshot_every=None)
    start = time.process_time()  # the recording work on its own: records, then snapshots
    for _ in range(100):
        probe._maybe_record(force=True)
    per_record = (time.process_time() - start) / 100
    start = time.process_time()
    for _ in range(100):
        probe.layer.weight.clone()
    per_snapshot = (time.process_time() - start) / 100
    alone = len(recorder) * per_record + len(recorder.weights) * per_snapshot
    lines = [
        f"Recorder overhead, FpLinear(784, 1000) sequential, {args.samples} samples of {name}",
        f"calls of {EVERY} samples; recorder every={EVERY} (all thresholds and firing counts), "
        f"weight snapshots every {recorder.snapshot_every}",
        f"torch {torch.__version__}, 1 thread, {platform.processor() or platform.machine()}",
        f"CPU time over {args.repeats} runs (seeds 0..{args.repeats - 1}): "
        f"without recorder {base:.3f} s, with recorder {with_rec:.3f} s",
        f"per run without: {', '.join(f'{s:.3f}' for s in plain)}",
        f"per run with:    {', '.join(f'{s:.3f}' for s in recorded)}",
        f"records {len(recorder)}, snapshots {len(recorder.weights)}",
        f"recording timed on its own: {1000 * per_record:.3f} ms per record, {1000 * per_snapshot:.3f} ms "
        f"per snapshot; one run's {len(recorder)} records and {len(recorder.weights)} snapshots: "
        f"{alone:.3f} s = {100 * alone / plain[-1]:.2f}% of its training time",
        f"overhead: {100 * (with_rec / base - 1):+.1f}% (limit +10%)",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
