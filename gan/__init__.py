"""Face generators (DCGAN, BEGAN), face super-resolution, and image-quality metrics."""
