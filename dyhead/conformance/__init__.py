"""Parity checks against golden data from the official DyHead implementation.

`python -m dyhead.conformance FILE` checks a tower golden or an end-to-end detector golden.
"""
