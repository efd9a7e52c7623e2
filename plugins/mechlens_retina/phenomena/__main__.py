"""``python -m mechlens_retina.phenomena [--model NAME] [--set NAME=VALUE]``: the four measures of a model."""

from mechlens_retina.phenomena import main

raise SystemExit(main())
