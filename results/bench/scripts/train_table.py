"""The markdown table of results/bench/train_sizes.jsonl (from train_sizes.sh), as the README shows it.

    python results/bench/scripts/train_table.py results/bench/train_sizes.jsonl
"""

import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print("| cores | dropout | resnets/filters/logistics | batch | GFLOP/step | fast (images/s) | port-style reference "
      "(images/s) | speed-up | fast GFLOP/s | matmul GFLOP/s | fast / matmul | grad err |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    m = r["model"]
    print(f"| {r['cores']} | {r['dropout_mode']} | {m['nr_resnet']}/{m['nr_filters']}/{m['nr_logistic_mix']} | {r['batch']} | "
          f"{r['gflop_per_step']:.1f} | {r['fast_images_per_s']:.2f} | {r['reference_images_per_s']:.2f} | "
          f"{r['speedup']:.2f}x | {r['fast_gflops_per_s']:.1f} | {r['matmul_gflops_per_s']:.1f} | "
          f"{100 * r['fast_fraction_of_matmul']:.0f}% | {r['first_step_grad_max_rel_err']:.1e} |")
