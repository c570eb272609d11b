"""The seed's ensemble member: `myapp.py --args X` writes its result to result.txt."""
import argparse
import math

ap = argparse.ArgumentParser()
ap.add_argument("--args", type=float, required=True)
x = ap.parse_args().args
open("result.txt", "w").write(f"{x} {math.sin(x):.6f}\n")
