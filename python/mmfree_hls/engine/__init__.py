"""The decode engine in Python: board presets, the weight-stream layout, the
schedule (cycles), the cost model and the generated C++ — one home for all of
them (docs/ARCHITECTURE.md)."""
