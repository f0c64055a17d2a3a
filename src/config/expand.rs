//! `$name` expansion (placeholder; being written).
