"""The cross-domain attribute study, the demo, and the `facegan` command line."""
