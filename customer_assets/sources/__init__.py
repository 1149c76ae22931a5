"""What the pipeline reads from the source database: queries, streaming extract, demo data."""
