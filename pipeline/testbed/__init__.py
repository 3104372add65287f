"""Traffic simulation, the demo's hours, the benchmark and the fault harness:
what exercises the pipeline.
"""
