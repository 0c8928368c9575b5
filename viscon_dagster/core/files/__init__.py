"""Files on a storage root (local or S3): atomic publishing, parquet reading and writing, partition leases."""
