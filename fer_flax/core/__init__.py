"""The bottom layer: errors users see, what commands share, the device mesh, padding to whole
batches, the host's platforms and the accelerator chips."""
