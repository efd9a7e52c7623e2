"""The retina CNN of Tanaka et al. 2019 / McIntosh et al. 2016, its data and training, and a synthetic retina."""
