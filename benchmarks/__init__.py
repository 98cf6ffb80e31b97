"""memstudy's speed and overhead benchmarks (not timed tests): `python -m benchmarks` or `make bench`.

See benchmarks/run.py for the figures; results go to results/bench/ (bench.csv, env.json, bench.md).
"""
