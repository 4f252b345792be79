"""FluoroSpot/ELISpot cell detection and secretion profiles (SpotNet, ConvNet baseline, APG):
the :class:`~.task.SpotsTask` of ``proxscope spots ...`` and ``proxscope bench spots``."""
