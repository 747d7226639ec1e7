"""Data helpers the stages share: the manifest, file hashes, the dataset catalogue, pair builders, synthetic data."""
