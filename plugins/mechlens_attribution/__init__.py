"""The attributor stage: integrated gradients (native, exact or Captum's), gradient x activation and
DeepLift, each cell's rate attributed to the units of a hidden layer (formerly ``mechlens_captum``)."""
