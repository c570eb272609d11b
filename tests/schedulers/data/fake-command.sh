#!/bin/sh
# A stand-in for a scheduler command (sbatch, qsub, bsub, ...), installed under that name by the
# fake_commands fixture in tests/schedulers/conftest.py. It records its argv (one word a line) in
# NAME.argv beside itself, and its stdin in NAME.stdin when NAME.reads-stdin exists; then it prints
# NAME.stdout and NAME.stderr and exits with the code in NAME.rc (0 without one).
name=$(basename "$0")
dir=$(dirname "$0")
: > "$dir/$name.argv"
if [ $# -gt 0 ]; then printf '%s\n' "$@" > "$dir/$name.argv"; fi
if [ -e "$dir/$name.reads-stdin" ]; then cat > "$dir/$name.stdin"; fi
if [ -e "$dir/$name.stdout" ]; then cat "$dir/$name.stdout"; fi
if [ -e "$dir/$name.stderr" ]; then cat "$dir/$name.stderr" >&2; fi
exit "$(cat "$dir/$name.rc" 2>/dev/null || echo 0)"
