"""Models of the retina: the paper's CNN (``cnn``, ``layers``, ``checkpoint``), the synthetic retina it is
trained on (``synthetic``), and that circuit written exactly into a CNN (``circuit_cnn``)."""
