"""The experiment: a shot file every PERIOD seconds (every 15 minutes at the machine; seconds here)."""
import os
import random
import sys
import time

out, shots, period = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for k in range(1, shots + 1):
    tmp = os.path.join(out, f".shot_{k:04d}.dat.part")
    with open(tmp, "w") as f:
        f.write(" ".join(f"{random.gauss(0, 1):.4f}" for _ in range(5000)))
    os.rename(tmp, os.path.join(out, f"shot_{k:04d}.dat"))  # appears complete, at once
    print(f"shot {k} at {time.time():.3f}", flush=True)
    if k < shots:
        time.sleep(period)
