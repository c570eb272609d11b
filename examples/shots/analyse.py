"""The between-shot analysis: reads one shot's file, 0.3 s of work, writes its summary beside it."""
import sys
import time

path = sys.argv[1]
data = open(path).read().split()
time.sleep(0.3)
open("summary.txt", "w").write(f"{path}: {len(data)} samples, mean {sum(map(float, data)) / len(data):.3f}\n")
