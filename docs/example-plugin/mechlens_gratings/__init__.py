"""Example third-party mechlens plugin: a drifting sinusoidal grating."""
