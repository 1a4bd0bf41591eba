"""Markdown table of scripts/ablation.sh's results: mean and spread (min-max) over seeds per benchmark and row."""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

ROWS = {
    "a-imagenet": "(a) ImageNet EfficientNet-Lite0, global pooling",
    "b-global-only": "(b) global branch only, metric loss",
    "c-no-landmark-pooling": "(c) FashionNet without landmark pooling, metric loss",
    "d-landmark-pooling": "(d) FashionNet with landmark pooling, metric loss",
    "e-multitask": "(e) (d) + category and attribute heads (default)",
}
METRICS = ("retrieval.top1", "retrieval.top20", "category.top3", "attributes.all.top3", "landmarks.ne")


def main(folder: Path) -> None:
    values: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(folder.glob("*.json")):
        match = re.fullmatch(r"(\w+)-(\d+)-(.+)", path.stem)
        if match is None or match.group(3) not in ROWS:
            continue
        flat = json.loads(path.read_text())
        for metric in METRICS:
            if metric in flat:
                values[(match.group(1), match.group(3))][metric].append(flat[metric])
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    times_file = folder / "times.txt"
    if times_file.exists():
        for line in times_file.read_text().splitlines():
            m = re.fullmatch(r"(\w+) seed \d+ (\S+): (\d+) s", line)
            if m:
                times[(m.group(1), m.group(2))].append(float(m.group(3)))
    print("| benchmark | model | seeds | " + " | ".join(METRICS) + " | train s |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in METRICS) + " | --- |")
    for (bench, row), by_metric in sorted(values.items()):
        cells = []
        for metric in METRICS:
            v = by_metric.get(metric)
            cells.append("–" if not v else f"{mean(v):.3f} ({min(v):.3f}-{max(v):.3f})")
        n = max(len(v) for v in by_metric.values())
        t = times.get((bench, row))
        print(f"| {bench} | {ROWS[row]} | {n} | " + " | ".join(cells) + f" | {mean(t):.0f} |" if t else
              f"| {bench} | {ROWS[row]} | {n} | " + " | ".join(cells) + " | – |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
