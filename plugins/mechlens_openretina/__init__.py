"""openretina's core-readout models as a mechlens Model (optional extra: ``pip install 'mechlens[openretina]'``)."""
