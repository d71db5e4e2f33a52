"""Taskdeck benchmarks: ``python -m bench [name ...]`` (``make bench``) prints tables and writes JSON."""
