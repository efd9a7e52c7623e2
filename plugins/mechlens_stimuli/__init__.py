"""Classic stimuli of retinal physiology as mechlens Stimulus plugins."""
