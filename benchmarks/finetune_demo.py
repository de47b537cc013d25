"""Fine-tuning from the bundled demo model against training from scratch, same recipe and iterations.

    python -m dyhead.data.demo --out data/shapes3 --seed 7 --train 300 --val 100 --classes star,ring,cross
    python -m benchmarks.finetune_demo --data data/shapes3 --out runs/finetune --iters 200

Runs `python -m dyhead.train --preset demo_cpu` twice on a dataset whose class list differs from the
demo model's (the demo generator's `--classes`): once with ``--init checkpoints/demo_dyhead.pt`` (the
classifier is re-initialised, everything else kept) and once from scratch, the same seed, batch,
learning rate and iterations, evaluating on the val split every `--eval-period` iterations. Prints
and writes (OUT/finetune.md, OUT/finetune.json) the loss curve and the COCO AP of both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(name: str, args, extra: list[str]) -> dict:
    out = Path(args.out) / name
    cmd = [sys.executable, "-m", "dyhead.train", "--preset", "demo_cpu", "--data", str(args.data), "--out", str(out),
           "--threads", str(args.threads), "--max-iter", str(args.iters), "--batch-size", str(args.batch_size),
           "--lr", str(args.lr), "--eval-period", str(args.eval_period), "--eval-images", str(args.eval_images),
           "--checkpoint-period", str(args.iters), "--no-progress", "--seed", "0", *extra]
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, cwd=REPO)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["iteration"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["iteration"], r["eval"]) for r in records if "eval" in r]
    return {"minutes": round((time.time() - start) / 60, 1), "losses": losses, "evals": evals}


def mean_loss(losses, lo: int, hi: int) -> float:
    values = [v for it, v in losses if lo < it <= hi]
    return sum(values) / max(1, len(values))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="runs/finetune")
    parser.add_argument("--init", default=str(REPO / "checkpoints" / "demo_dyhead.pt"))
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.01, help="the demo preset's 0.02 at batch 8, scaled to batch 4")
    parser.add_argument("--eval-period", type=int, default=50)
    parser.add_argument("--eval-images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    results = {"fine-tuned": run("finetuned", args, ["--init", args.init]), "from scratch": run("scratch", args, [])}
    step = args.eval_period
    lines = [f"{args.iters} iterations at batch {args.batch_size}, LR {args.lr} (demo_cpu recipe), data {args.data}, "
             f"AP on the first {args.eval_images} val images (COCOeval), CPU, {args.threads} thread(s)", "",
             "| iterations | " + " | ".join(f"{name}: mean loss / AP" for name in results) + " |",
             "| --- | " + " | ".join("---" for _ in results) + " |"]
    for it in range(step, args.iters + 1, step):
        cells = []
        for res in results.values():
            ap = dict(res["evals"]).get(it, {}).get("AP")
            cells.append(f"{mean_loss(res['losses'], it - step, it):.3f} / "
                         + (f"{100 * ap:.1f}" if ap is not None else "-"))
        lines.append(f"| {it} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("wall time: " + ", ".join(f"{name} {res['minutes']} min" for name, res in results.items()))
    text = "\n".join(lines)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "finetune.md").write_text(text + "\n")
    (Path(args.out) / "finetune.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
