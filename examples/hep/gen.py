"""One event generator: reads the grid staged from its parent, writes events.dat for its seed."""
import json
import random
import sys

seed, n = int(sys.argv[1]), int(sys.argv[2])
grid = json.load(open("grid.json"))
rng = random.Random(seed)
with open("events.dat", "w") as f:
    for _ in range(n):
        b = rng.randrange(grid["bins"])
        f.write(f"{b} {grid['weights'][b] * rng.random():.6f}\n")
print(f"seed {seed}: {n} events")
