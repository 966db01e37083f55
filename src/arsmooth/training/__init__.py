"""Training: the one loop every model trains through (`loop`) and the image trainer with checkpoints that
survive a crash (`trainer`)."""
