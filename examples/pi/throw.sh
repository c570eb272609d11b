#!/bin/sh
# One Monte Carlo job: throw $2 darts with seed $1, write "hits darts" to hits_<seed>.txt.
seed=$1
n=$2
awk -v seed="$seed" -v n="$n" 'BEGIN { srand(seed); h = 0
  for (i = 0; i < n; i++) { x = rand(); y = rand(); if (x * x + y * y < 1) h++ }
  print h, n }' > "hits_$seed.txt"
echo "seed $seed: $(cat "hits_$seed.txt")"
