"""Pure, typed functions over DataFrames: the pipeline's business logic, free of Dagster."""
