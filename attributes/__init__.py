"""Multi-dataset face-attribute recognition: shared trunk, per-dataset heads, SA-softmax."""
