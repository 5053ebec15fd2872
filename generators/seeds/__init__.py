"""Small seed sets written for this project, one JSONL file per domain."""
