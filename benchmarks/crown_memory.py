"""Peak memory of one CROWN bound computation (the ``certified-crown`` certifier's inner step) against its batch.

The full profile certifies the image grid's ``cnn`` (conv32-conv64-conv64-fc256, Fashion-MNIST 28x28) at Linf
0.1 in batches of the certifier's full-profile ``batch_size``. auto_LiRPA 0.3 holds linear bounds of every
intermediate layer for the whole batch, so the peak grows about linearly with the batch: this script measures it
at a few small batches, each in a fresh process (the CPU's peak RSS never goes down; on CUDA the allocator's
``max_memory_allocated``), fits the slope and extrapolates to the full profile's batch, to say which GPU holds a
CROWN cell. The model is freshly initialised: on the CPU the peak of a briefly FGSM-trained model came out the
same to within 1 % at batches 2-16.

    python benchmarks/crown_memory.py --batch 2 4 8 16 --json benchmarks/results/crown_memory_cpu.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

ONE = r"""
import json, resource, sys, torch
from bench.tracks.image_robustness import lirpa_compat as lc
from bench.tracks.image_robustness.models import build_model
batch, device = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
model = build_model("cnn", (1, 28, 28), 10, 1).to(device).eval()
x = torch.rand(batch, 1, 28, 28, device=device)
y = model(x).argmax(1)
bounded = lc.build_bounded(model, (1, 28, 28), device)
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.max_memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with torch.no_grad():
    lc.margin_lower_bounds(bounded, x, y, 0.1, "CROWN", (0.0, 1.0), 10)
if device == "cuda":
    peak = torch.cuda.max_memory_allocated()
    extra = {"reserved_peak_mib": torch.cuda.max_memory_reserved() / 2**20,
             "gpu": torch.cuda.get_device_name(), "gpu_total_mib": torch.cuda.mem_get_info()[1] / 2**20}
else:
    peak, extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, {}
print(json.dumps({"batch": batch, "peak_mib": (peak - base) / 2**20, **extra}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--json", help="write the summary here too")
    args = p.parse_args(argv)
    from bench.hparams import resolve
    from bench_attacks.image_robustness.certified import CertifiedCROWN

    full_batch = int(resolve({"certified-crown": CertifiedCROWN}, "full", [])["certified-crown"].batch_size)
    points = []
    for batch in args.batch:
        out = subprocess.run([sys.executable, "-c", ONE, str(batch), args.device], capture_output=True, text=True)
        if out.returncode and "out of memory" in out.stderr.lower():  # a finding, not a failure of the script
            points.append({"batch": batch, "out_of_memory": True})
            print(f"batch {batch:4d}: out of memory", flush=True)
            continue
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        points.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"batch {batch:4d}: {points[-1]['peak_mib']:9.0f} MiB", flush=True)
    # least squares over the batches that ran: peak = a + b * batch
    fitted = [q for q in points if "peak_mib" in q]
    n = max(len(fitted), 1)
    mx = sum(q["batch"] for q in fitted) / n
    my = sum(q["peak_mib"] for q in fitted) / n
    sxx = sum((q["batch"] - mx) ** 2 for q in fitted)
    slope = sum((q["batch"] - mx) * (q["peak_mib"] - my) for q in fitted) / sxx if sxx else float("nan")
    at_full = my + slope * (full_batch - mx)
    summary = {"device": args.device, "model": "cnn (full profile), Fashion-MNIST 1x28x28, Linf 0.1, CROWN",
               "points": points, "mib_per_example": round(slope, 1), "full_profile_batch": full_batch,
               "extrapolated_peak_gib_at_full_batch": round(at_full / 1024, 1)}
    print(f"{slope:.0f} MiB per example; at the full profile's batch {full_batch}: {at_full / 1024:.1f} GiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
