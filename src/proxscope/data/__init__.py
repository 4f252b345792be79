"""Datasets, transforms, image / points I/O and tiling."""
