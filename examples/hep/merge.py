"""The merge: every unweighting job's unweighted.dat, each in <parent>_<id>/ (sluice never overwrites one)."""
import glob

files = sorted(glob.glob("*/unweighted.dat"))
events = sum(1 for f in files for _ in open(f))
open("merged.txt", "w").write(f"{len(files)} files, {events} events\n")
print(f"merged {len(files)} files, {events} events")
