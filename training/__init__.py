"""Training, evaluation and benchmark scripts (they import fer_core; fer_core never imports them)."""
