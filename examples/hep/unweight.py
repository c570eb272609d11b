"""Unweighting: keeps each event with probability weight / max weight; writes unweighted.dat."""
import random

events = [tuple(map(float, line.split())) for line in open("events.dat")]
top = max(w for _, w in events)
rng = random.Random(len(events))
kept = [e for e in events if rng.random() < e[1] / top]
with open("unweighted.dat", "w") as f:
    f.writelines(f"{int(b)} {w:.6f}\n" for b, w in kept)
print(f"kept {len(kept)} of {len(events)}")
