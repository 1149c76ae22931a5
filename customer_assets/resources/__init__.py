"""Resources: connections to the systems the pipeline reads from and writes to."""
