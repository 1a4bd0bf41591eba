"""Benchmarks behind `fashion bench ...`: scripts that print ratios measured side by side in one run.

Never timed assertions inside tests: a shared 2-core machine makes absolute numbers noisy, ratios less so.
"""
