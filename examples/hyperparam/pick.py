"""The best learning rate among the trainings' score.txt (each in <parent>_<id>/)."""
import glob

scores = [tuple(map(float, open(f).read().split())) for f in glob.glob("*/score.txt")]
lr, loss = min(scores, key=lambda s: s[1])
open("best.txt", "w").write(f"{lr:g} {loss:.6f}\n")
print(f"best lr {lr:g} (loss {loss:.4f}) of {len(scores)}")
