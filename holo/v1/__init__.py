"""Generated protobuf and gRPC code for holo.v1. Do not edit.

Source: proto/holo/v1/*.proto; regenerate with ``make proto`` (proto/generate.py).
"""
