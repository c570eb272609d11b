"""Integration grid (the cluster's step): a small table of weights the generators read."""
import json
import sys

bins = int(sys.argv[1]) if len(sys.argv) > 1 else 16
json.dump({"bins": bins, "weights": [1.0 + i / bins for i in range(bins)]}, open("grid.json", "w"))
print(f"grid of {bins} bins")
