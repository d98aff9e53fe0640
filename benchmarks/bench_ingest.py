"""LSL pull + buffer write per block at 64 ch / 5 kHz and 128 ch / 20 kHz, vs np.roll.

Usage: python benchmarks/bench_ingest.py [duration_s]
"""
import sys

from tmseeg.bench import main

if __name__ == "__main__":
    raise SystemExit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 4.0))
