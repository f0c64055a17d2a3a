//! The effective Postfix configuration (placeholder; being written).
