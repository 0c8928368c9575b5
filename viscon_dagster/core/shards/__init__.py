"""Where source shards come from (local, S3, the Hub), how they are read, and the registry of partition keys."""
