"""SPoD super-resolution recovery: simulate, train (layer-wise), predict, evaluate, bench.

Seed: spodnet-lista-spod-microscopy.txt.
"""
