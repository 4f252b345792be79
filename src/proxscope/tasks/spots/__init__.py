"""FluoroSpot/ELISpot cell detection and secretion profiles: simulate, train, predict, evaluate,
bench (SpotNet, ConvNet baseline, APG). The click commands live in :mod:`.cli`."""
