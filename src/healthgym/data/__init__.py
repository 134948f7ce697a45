"""What a column is and what a cohort holds: the schema and its constraints, the validated
long table with its readers and writers, Parquet shards read chunk by chunk, and the atomic
writes that never leave a half-written file."""
