"""Benchmark logic shared by the scripts in benchmarks/ and `minitransformer bench`."""
