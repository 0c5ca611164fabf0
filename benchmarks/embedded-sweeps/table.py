"""Markdown table of embedded_sweep.py records: python benchmarks/embedded-sweeps/table.py records-*.jsonl"""

import json
import sys

DOMAINS = ["editing", "instruction", "tool_calling", "math", "coding", "verbatim", "controls"]

print("| variant | tokens (M) | copy: repeat / first (nats) | held-out NLL | " + " | ".join(DOMAINS)
      + " | verbatim PASS/COPY | in band |")
print("|---" * (len(DOMAINS) + 6) + "|")
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)
        steps = f"{r['tokens'] / 1e6:.1f}"
        cells = " | ".join(f"{100 * r['exact_match'].get(d, 0):.0f} / {100 * r['wrong_share'][d]:.0f}" for d in DOMAINS)
        v = r["verbatim"]
        print(f"| {r['name']}{' (fp)' if r['variant'] == 'fp' else ''} | {steps} | {r['copy']['repeat_nll']:.2f} / "
              f"{r['copy']['first_list_nll']:.2f} | {r['heldout_nll']:.2f} | {cells} | "
              f"{v.get('PASS', 0)}/{v.get('COPY', 0)} "
              f"| {len(r['in_band'])} |")
